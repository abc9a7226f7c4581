"""Hugging Face models through TransformerLens (saeflow.models.hf), offline, on tiny random models of each family.

Each family's tiny model is loaded by ``load_hooked`` (the function the paper presets use, with the paper
model's TransformerLens name) with every socket connection refused; its logits and residual stream are
compared with the HF model's own forward (eager attention), and the downstream code paths (activation cache,
a sparsify coder converted to sae-lens, recon, influence) run on it.
"""

from __future__ import annotations

import math
import socket
import time

import numpy as np
import pytest
import torch
from hubcache import populate_hub_cache, use_hub_cache

from saeflow.models import hf, random_models

SITE_LAYER = 1


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every connection attempt fails loudly (nothing here may reach the network)."""
    def refuse(*args, **kwargs):
        raise OSError("saeflow test: network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An empty (or test-populated) hub cache, offline mode, for hub-path specs (local_dir None)."""
    return use_hub_cache(monkeypatch, tmp_path / "hub")


_BUILT: dict = {}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> spec of its tiny random model (built once per module)."""
    def get(family, dtype="float32"):
        if (family, dtype) not in _BUILT:
            _BUILT[family, dtype] = random_models.random_model(family, tmp_path_factory.mktemp(f"{family}-{dtype}"), "tiny",
                                                    seed=0, dtype=dtype)
        return _BUILT[family, dtype]
    return get


def _windows(spec, tok, n=6, ctx=16):
    from saeflow.data import corpus, tokenizer, windows

    docs, _ = corpus.synthetic_documents(12, 40, seed=3, n_filler=64, n_topic_words=8, n_topics=2)
    ids = tokenizer.encode_documents(tok, [d.text for d in docs])
    return windows.cut_windows(ids, ctx, n, 0, hf.bos_id(spec, tok))["tokens"]


@pytest.mark.parametrize("family", hf.FAMILIES)
def test_family_matches_hf_and_runs_downstream(family, tiny, tmp_path):
    from sparsify import SparseCoder, SparseCoderConfig

    from saeflow.data.activations import cache_activations, first_rows
    from saeflow.dictionaries.fidelity import check_encode_fidelity
    from saeflow.dictionaries.formats import convert_sparsify
    from saeflow.evals.influence import DictSpec, window_influence
    from saeflow.evals.recon import evaluate_recon

    spec = tiny(family)
    assert spec["tl_name"] == hf.FAMILY_TL_NAME[family] and spec["processing"] == "none"
    model = hf.load_hooked(spec)  # sockets refused: TL must not touch the network
    assert not model.training and model.cfg.n_layers == spec["n_layers"] == 3 and model.cfg.d_model == 64
    ref = hf.load_hf_model(spec, attn_implementation="eager")
    tok = hf.load_tokenizer(spec)

    # BOS: the tokenizer's, or (Qwen2, no BOS token) its EOS, as TransformerLens/sae-lens use.
    bos = hf.bos_id(spec, tok)
    qwen = family in ("qwen2", "qwen3")
    assert bos == (tok.eos_token_id if qwen else tok.bos_token_id) and bos is not None
    assert (tok.bos_token is None) == qwen
    assert model.cfg.default_prepend_bos is True

    windows = _windows(spec, tok)
    x = torch.as_tensor(windows[:2], dtype=torch.long)
    assert (x[:, 0] == bos).all()
    with torch.no_grad():
        out = ref(x, output_hidden_states=True)
        logits, cache = model.run_with_cache(x, names_filter=lambda n: n.endswith("hook_resid_post"))
    scale = out.logits.abs().max().item()
    torch.testing.assert_close(logits, out.logits, rtol=1e-4, atol=1e-4 * scale)
    # sparsify layers.N == TL blocks.N.hook_resid_post == HF hidden_states[N + 1], except the last layer,
    # where HF applies the final norm.
    L = model.cfg.n_layers
    for n in range(L - 1):
        h = out.hidden_states[n + 1]
        torch.testing.assert_close(cache[f"blocks.{n}.hook_resid_post"], h, rtol=1e-4, atol=1e-4 * h.abs().max().item())
    last, h_last = cache[f"blocks.{L - 1}.hook_resid_post"], out.hidden_states[L]
    assert (last - h_last).abs().max() > 0.1 * h_last.abs().max()
    with torch.no_grad():
        torch.testing.assert_close(model.ln_final(last), h_last, rtol=1e-4, atol=1e-4 * h_last.abs().max().item())

    # Downstream: cache -> random sparsify coder -> sae-lens conversion -> recon -> influence.
    site = f"blocks.{SITE_LAYER}.hook_resid_post"
    stats = cache_activations(model, windows, [site], tmp_path / "cache", dtype="float32", shard_tokens=40,
                              batch_size=4, progress=False)
    assert stats[site]["n_tokens"] == windows.shape[0] * (windows.shape[1] - 1) and stats[site]["d"] == 64
    acts = first_rows(tmp_path / "cache", site, 45)
    torch.testing.assert_close(acts[:15], cache[site][0, 1:], rtol=1e-5, atol=1e-5 * cache[site].abs().max().item())
    torch.manual_seed(0)
    coder = SparseCoder(64, SparseCoderConfig(num_latents=128, k=8), device="cpu", dtype=torch.float32)
    sae = convert_sparsify(coder, site)
    fid = check_encode_fidelity(coder, sae, acts)
    assert fid["passed"], fid
    summary, per_seq = evaluate_recon(model, sae, torch.as_tensor(windows, dtype=torch.long), site, batch_size=4,
                                      n_resamples=20)
    assert all(math.isfinite(summary[k]["value"]) for k in ("fvu", "ce_recovered"))
    assert (per_seq["n_tokens"] == windows.shape[1] - 1).all()
    res = window_influence(model, windows[0], {SITE_LAYER: DictSpec(sae, site)}, threshold=0.0)[SITE_LAYER]
    T = windows.shape[1]
    assert res.J.shape == (len(res.latents), T) and len(res.latents) > 0
    assert np.isfinite(res.J).all() and (res.J >= 0).all() and res.R.shape == (T,)
    assert np.all(res.H <= math.log2(T) + 1e-9)


def test_gpt2_default_processing_centres_the_residual_stream(tiny):
    """processing "default" (fold LN, centre writing weights and unembed, fold value biases): same next-token
    distribution as HF, and the residual stream is exactly the unprocessed one minus its mean over d_model
    (what center_writing_weights alone gives: gpt2-small-res-jb's setting)."""
    spec = tiny("gpt2")
    none = hf.load_hooked(spec)
    default = hf.load_hooked({**spec, "processing": "default"})
    assert default.cfg.normalization_type == "LNPre" and none.cfg.normalization_type == "LN"
    x = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ln, cn = none.run_with_cache(x)
        ld, cd = default.run_with_cache(x)
    torch.testing.assert_close(ld.log_softmax(-1), ln.log_softmax(-1), rtol=1e-4, atol=1e-4)
    for n in range(spec["n_layers"]):
        r = cn[f"blocks.{n}.hook_resid_post"]
        torch.testing.assert_close(cd[f"blocks.{n}.hook_resid_post"], r - r.mean(-1, keepdim=True),
                                   rtol=1e-4, atol=1e-4 * r.abs().max().item())


def test_bfloat16_spec(tiny):
    spec = tiny("llama", "bfloat16")
    model = hf.load_hooked(spec)
    assert model.cfg.dtype == torch.bfloat16 and model.W_E.dtype == torch.bfloat16
    ref = hf.load_hooked(tiny("llama"))
    x = torch.randint(3, 300, (1, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = model(x).float(), ref(x)
    assert (a - b).abs().max() < 0.1 * b.abs().max()


def test_spec_shape_mismatch_names_the_key(tiny):
    spec = tiny("gpt2")
    with pytest.raises(ValueError, match="'n_layers' = 4 .*n_layers = 3"):
        hf.load_hooked({**spec, "n_layers": 4})
    with pytest.raises(ValueError, match="'d_model' = 32"):
        hf.load_hooked({**spec, "d_model": 32})
    with pytest.raises(ValueError, match="'processing'"):
        hf.load_hooked({**spec, "processing": "fold"})
    with pytest.raises(ValueError, match="'tl_name'.*not a TransformerLens official model name"):
        hf.load_hooked({**spec, "tl_name": "openai-community/gpt2"})
    with pytest.raises(ValueError, match="'tl_name'.*Gemma2ForCausalLM.*GPT2LMHeadModel"):
        hf.load_hooked({**spec, "tl_name": "gemma-2-2b"})
    with pytest.raises(ValueError, match="'revision'"):
        hf.check_spec({**spec, "local_dir": None, "revision": "main"})


def test_hub_spec_offline_fails_clearly(offline_hub):
    spec = {"hf_id": "EleutherAI/pythia-70m-deduped", "revision": "a" * 40, "local_dir": None, "tl_name": None,
            "processing": "none", "dtype": "float32", "prepend_bos": True, "n_layers": 6, "d_model": 512}
    t0 = time.perf_counter()
    for fn in (hf.load_tokenizer, hf.load_hooked):
        with pytest.raises(RuntimeError, match="EleutherAI/pythia-70m-deduped.*'local_dir'"):
            fn(spec)
    assert time.perf_counter() - t0 < 30


def test_hub_spec_loads_pinned_revision_from_cache(offline_hub, tiny):
    """local_dir None: the same load through the hub client at the pinned commit (a hand-filled cache, offline);
    TL's own by-name config lookup is answered with the pinned config, not the hub's main."""
    spec = tiny("gpt-neox")
    commit = spec["revision"]
    assert len(commit) == 40
    populate_hub_cache(offline_hub, "EleutherAI/pythia-70m-deduped", spec["local_dir"], commit=commit)
    hub_spec = {**spec, "hf_id": "EleutherAI/pythia-70m-deduped", "revision": commit, "local_dir": None,
                "tl_name": None}
    a, b = hf.load_hooked(hub_spec), hf.load_hooked(spec)
    x = torch.randint(3, 300, (1, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="'local_dir'"):
        hf.load_hooked({**hub_spec, "revision": "f" * 40})


@pytest.mark.parametrize("preset", sorted(hf.PAPER_MODELS))
def test_real_shapes_reproduce_transformer_lens_configs(preset):
    """On the real configs (no weights), the fields load_hooked takes from the HF config equal what TL
    3.9.0 hard-codes by name (so they change nothing for the paper presets), and the shapes match the table."""
    from transformers import LlamaConfig

    facts = hf.PAPER_MODELS[preset]
    if preset == "llama-3-8b":
        cfg = LlamaConfig(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                          intermediate_size=14336, max_position_embeddings=8192, vocab_size=128256, rms_norm_eps=1e-5,
                          rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                          architectures=["LlamaForCausalLM"])
    else:
        cfg = random_models.family_config(facts["family"], "real")
    tl, overridden = hf.tl_config(cfg, facts["tl_name"])
    assert overridden == {}
    assert (tl["n_layers"], tl["d_model"]) == (facts["n_layers"], facts["d_model"])
    assert tl["d_vocab"] == cfg.vocab_size
    assert hf.model_facts_from_dict(cfg.to_dict())["n_layers"] == facts["n_layers"]


def test_model_facts(tiny):
    spec = tiny("gemma2")
    assert hf.model_facts(spec["local_dir"]) == {"n_layers": 3, "d_model": 64, "d_vocab": 448,
                                                 "architecture": "Gemma2ForCausalLM"}


def test_saelens_processing_map():
    assert hf.processing_for_saelens_kwargs(None) == "none"
    assert hf.processing_for_saelens_kwargs({"center_writing_weights": False}) == "none"
    assert hf.processing_for_saelens_kwargs({"center_writing_weights": True}) == "default"
    assert hf.processing_for_saelens_kwargs({"fold_ln": False, "dtype": "bfloat16"}) == "none"
    with pytest.raises(ValueError, match="checkpoint_index"):
        hf.processing_for_saelens_kwargs({"checkpoint_index": 2})
    assert set(hf.SAELENS_PROCESSING.values()) <= set(hf.PROCESSING)


def test_random_model_is_deterministic(tiny, tmp_path):
    spec = tiny("qwen2")
    again = random_models.random_model("qwen2", tmp_path / "again", "tiny", seed=0)
    other = random_models.random_model("qwen2", tmp_path / "other", "tiny", seed=1)
    assert again["revision"] == spec["revision"] != other["revision"]
    assert {k: v for k, v in again.items() if k != "local_dir"} == {k: v for k, v in spec.items() if k != "local_dir"}
    with pytest.raises(ValueError, match="family"):
        random_models.random_model("mamba", tmp_path / "x")
