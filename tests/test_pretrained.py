"""saeflow.dictionaries.pretrained: pretrained dictionaries through the real loaders, offline.

Tiny dictionaries are written in each format's on-disk layout (``write_tiny``) and loaded (a) from a local
snapshot directory and (b) through the Hugging Face hub code path (``SAE.from_pretrained``,
``SparseCoder.load_from_hub``, ``hf_hub_download``) from a hand-populated hub cache in offline mode
(``tests/hubcache.py``). Each repo has two commits: A (seed 0, pinned by revision) and B (seed 1, "main"),
so the tests also see that a pinned revision loads A and an unpinned load gets B.
"""

import copy
import pickle
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sae_lens")
pytest.importorskip("sparsify")

sys.path.insert(0, str(Path(__file__).parent))
import hubcache  # noqa: E402
from ties import assert_same_active_codes  # noqa: E402

from saeflow.dictionaries import codes, formats, pretrained, tiny  # noqa: E402  # noqa: E402

LAYER, D_IN, D_SAE, K = 2, 16, 64, 4
HOOK = f"blocks.{LAYER}.hook_resid_post"
TEMPLATES = {"saelens": "blocks.{layer}.hook_resid_post", "sparsify": "layers.{layer}",
             "dictionary_learning": "resid_out_layer{layer}/10_32768"}
CASES = [("saelens", "topk"), ("saelens", "jumprelu"), ("saelens", "standard"), ("sparsify", "topk"),
         ("dictionary_learning", "standard")]
CASE_IDS = [f"{f}-{a}" for f, a in CASES]


def _x(n=256, seed=7, d=D_IN):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(n, d, generator=g) + torch.randn(d, generator=g)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Offline hub cache for the whole module; yields {case: {"A": dir, "B": dir, "commit_A": .., "repo": ..}}."""
    base = tmp_path_factory.mktemp("pretrained")
    with pytest.MonkeyPatch.context() as mp:
        cache = hubcache.use_hub_cache(mp, base / "hub_cache")
        out = {}
        for fmt, arch in CASES:
            repo = f"tiny-org/{fmt.replace('_', '-')}-{arch}"
            case = {"repo": repo}
            for name, seed in (("A", 0), ("B", 1)):
                root = base / f"{fmt}-{arch}-{name}"
                tiny.write_tiny(fmt, root, LAYER, D_IN, D_SAE, HOOK, seed=seed, k=K, architecture=arch)
                case[name] = root
                case[f"commit_{name}"] = hubcache.populate_hub_cache(cache, repo, root, ref="main")
            out[(fmt, arch)] = case
        yield out


def _spec(fmt, case, source):
    spec = {"format": fmt, "release": case["repo"], "id": TEMPLATES[fmt]}
    if source == "local":
        spec["local_dir"] = str(case["A"])
    elif source == "pinned":
        spec["revision"] = case["commit_A"]
    return spec


def _assert_same_codes(a, b, x):
    with torch.no_grad():
        fa, fb = codes.encode(a, x), codes.encode(b, x)
    assert_same_active_codes(fa, fb)  # identical up to a float tie at the selection boundary


# --------------------------------------------------------------------------------------------------

def test_layouts_are_the_real_ones(hub):
    A = {c: hub[c]["A"] for c in CASES}
    assert sorted(p.name for p in (A[("saelens", "topk")] / HOOK).iterdir()) == ["cfg.json",
                                                                                  "sae_weights.safetensors"]
    assert sorted(p.name for p in (A[("sparsify", "topk")] / f"layers.{LAYER}").iterdir()) == ["cfg.json",
                                                                                             "sae.safetensors"]
    dl = A[("dictionary_learning", "standard")] / f"resid_out_layer{LAYER}" / "10_32768"
    assert sorted(p.name for p in dl.iterdir()) == ["ae.pt", "config.json"]
    sd = torch.load(dl / "ae.pt", weights_only=True)
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        "bias": (D_IN,), "encoder.weight": (D_SAE, D_IN), "encoder.bias": (D_SAE,), "decoder.weight": (D_IN, D_SAE)}
    repo = hubcache.repo_folder(Path(__import__("huggingface_hub").constants.HF_HUB_CACHE), hub[CASES[0]]["repo"])
    assert (repo / "refs" / "main").read_text() == hub[CASES[0]]["commit_B"]
    assert (repo / "snapshots" / hub[CASES[0]]["commit_A"] / HOOK / "cfg.json").is_symlink()


@pytest.mark.parametrize("source", ["local", "hub", "pinned"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_load_convert_check_save_reload(hub, case, source, tmp_path):
    fmt, arch = case
    spec = _spec(fmt, hub[case], source)
    x = _x()
    res = pretrained.load_pretrained(spec, LAYER, HOOK, x, tmp_path)

    fid = res["fidelity"]
    assert fid["passed"] and fid["n_differing_tokens"] == 0 and fid["n_tied_tokens"] <= 1  # ties: another machine's kernels
    assert fid["n_tokens"] == len(x)
    d = res["describe"]
    assert (d["d_in"], d["d_sae"], d["hook_name"], d["architecture"]) == (D_IN, D_SAE, HOOK, arch)
    assert d["apply_b_dec_to_input"] is True
    if arch == "topk":
        assert d["k"] == K
    if arch == "jumprelu":
        assert 0.2 <= d["threshold"]["min"] <= d["threshold"]["max"] <= 0.5

    # the saved directory is what the workflow loads; it encodes exactly like the native dictionary
    reloaded = formats.load_saelens(res["saelens_dir"])
    native = pretrained.load_native(spec, LAYER)
    _assert_same_codes(native.float(), reloaded, x)
    l0 = (codes.encode(reloaded, x) > 0).sum(-1).float()
    assert l0.mean() > 0  # the check is not vacuous
    if arch == "topk":
        assert l0.max() <= K

    # hub: unpinned is "main" (commit B, seed 1), pinned and local are commit A (seed 0)
    want = hub[case]["B" if source == "hub" else "A"]
    other = hub[case]["A" if source == "hub" else "B"]
    _assert_same_codes(pretrained.load_native({**spec, "revision": None, "local_dir": str(want)}, LAYER), reloaded, x)
    with torch.no_grad():
        assert not torch.equal(codes.encode(pretrained.load_native({**spec, "revision": None, "local_dir": str(other)}, LAYER), x),
                               codes.encode(reloaded, x))


def test_native_types_and_encode_dispatch(hub):
    x = _x(32)
    kinds = {}
    for case in CASES:
        native = pretrained.load_native(_spec(case[0], hub[case], "local"), LAYER)
        kinds[case] = type(native).__name__
        f = codes.encode(native, x)
        assert f.shape == (32, D_SAE) and (f >= 0).all()
        torch.testing.assert_close(codes.reconstruct(native, x), codes.decode(native, f))
    assert kinds[("sparsify", "topk")] == "SparseCoder"
    assert kinds[("dictionary_learning", "standard")] == "DLAutoEncoder"
    assert kinds[("saelens", "jumprelu")] == "JumpReLUSAE"


def test_dictionary_learning_math_matches_its_autoencoder(hub):
    """DLAutoEncoder reproduces dictionary_learning's AutoEncoder formulas from the raw state dict, and the
    StandardSAE conversion reproduces both encode and decode."""
    case = ("dictionary_learning", "standard")
    spec = _spec(*case[:1], hub[case], "local")
    sd = torch.load(hub[case]["A"] / f"resid_out_layer{LAYER}/10_32768/ae.pt", weights_only=True)
    ae = pretrained.load_native(spec, LAYER)
    x = _x(64)
    f_ref = torch.relu((x - sd["bias"]) @ sd["encoder.weight"].T + sd["encoder.bias"])
    with torch.no_grad():
        torch.testing.assert_close(ae.encode(x), f_ref)
        torch.testing.assert_close(ae.decode(f_ref), f_ref @ sd["decoder.weight"].T + sd["bias"])
        sae = pretrained.to_saelens(ae, spec, HOOK)
        torch.testing.assert_close(sae.encode(x), f_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae.decode(f_ref), ae.decode(f_ref), rtol=1e-5, atol=1e-5)
    assert torch.equal(sae.W_enc, sd["encoder.weight"].T) and torch.equal(sae.W_dec, sd["decoder.weight"].T)
    assert torch.equal(sae.b_dec, sd["bias"]) and sae.cfg.apply_b_dec_to_input


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_dropping_the_b_dec_shift_is_caught(hub, case, tmp_path, monkeypatch):
    real = pretrained.to_saelens

    def wrong(native, spec, hook_name):
        sae = copy.deepcopy(real(native, spec, hook_name))  # never alter the native module
        sae.cfg.apply_b_dec_to_input = False
        return sae

    monkeypatch.setattr(pretrained, "to_saelens", wrong)
    spec = _spec(case[0], hub[case], "local")
    with pytest.raises(RuntimeError, match="tokens differ beyond a tie") as e:
        pretrained.load_pretrained(spec, LAYER, HOOK, _x(), tmp_path)
    assert hub[case]["repo"] in str(e.value) and TEMPLATES[case[0]].format(layer=LAYER) in str(e.value)
    assert not (tmp_path / "saelens").exists()


def test_bfloat16_sparsify_coder(tmp_path):
    """Hub sparsify coders are stored in bfloat16; the check runs on the exact float32 cast."""
    root = tmp_path / "repo"
    tiny.write_tiny("sparsify", root, LAYER, D_IN, D_SAE, HOOK, seed=3, k=K, dtype="bfloat16")
    spec = {"format": "sparsify", "release": "x/y", "id": "layers.{layer}", "local_dir": str(root)}
    assert pretrained.describe(pretrained.load_native(spec, LAYER))["dtype"] == "bfloat16"
    res = pretrained.load_pretrained(spec, LAYER, HOOK, _x(), tmp_path / "out")
    assert res["fidelity"]["passed"] and res["native"]["dtype"] == "bfloat16"


def test_registry_release_with_legacy_cfg(tmp_path, monkeypatch):
    """A release of sae-lens' registry (gpt2-small-resid-post-v5-32k): the registry maps the id to the folder
    v5_32k_layer_<L>.pt of jbloom/GPT2-Small-OAI-v5-32k-resid-post-SAEs and adds its config overrides
    (neuronpedia id, dataset); the cfg.json is in the pre-6.0 format of older hub repos."""
    cache = hubcache.use_hub_cache(monkeypatch, tmp_path / "cache")
    root = tmp_path / "snapshot"
    tiny.write_tiny("saelens", root, 1, D_IN, D_SAE, "blocks.1.hook_resid_post", seed=0, k=K, architecture="topk",
                 sae_id="v5_32k_layer_1.pt", cfg_style="legacy")
    commit = hubcache.populate_hub_cache(cache, "jbloom/GPT2-Small-OAI-v5-32k-resid-post-SAEs", root)
    spec = {"format": "saelens", "release": "gpt2-small-resid-post-v5-32k", "id": "blocks.{layer}.hook_resid_post"}
    x = _x()
    for extra in ({}, {"revision": commit}, {"local_dir": str(root)}):
        res = pretrained.load_pretrained({**spec, **extra}, 1, "blocks.1.hook_resid_post", x, tmp_path / "out")
        assert res["fidelity"]["passed"]
        assert res["describe"]["architecture"] == "topk" and res["describe"]["k"] == K
        assert res["describe"]["neuronpedia_id"] == "gpt2-small/1-res_post_32k-oai"
    with pytest.raises(ValueError, match="not found"):
        pretrained.load_native({**spec, "id": "blocks.99.hook_resid_post"}, 0)


def test_gemma_scope_params_npz(tmp_path, monkeypatch):
    """Gemma Scope repos hold params.npz; sae-lens' gemma_2 converter reads it and derives the config from
    the repo id (d_in 2304 for 2b) and folder name (width_4k). The smallest real shape is used: the
    embedding SAE of gemma-scope-2b-pt-res, loaded from a local snapshot and from the hub cache."""
    cache = hubcache.use_hub_cache(monkeypatch, tmp_path / "cache")
    root = tmp_path / "snapshot"
    sae_id = "embedding/width_4k/average_l0_6"
    tiny.write_tiny("saelens", root, 0, 2304, 4096, "hook_embed", seed=0, architecture="jumprelu", sae_id=sae_id,
                 cfg_style="gemma_scope")
    assert sorted(p.name for p in (root / sae_id).iterdir()) == ["params.npz"]
    spec = {"format": "saelens", "release": "gemma-scope-2b-pt-res", "id": sae_id, "local_dir": str(root)}
    x = _x(32, d=2304)
    res = pretrained.load_pretrained(spec, 0, "hook_embed", x, tmp_path / "local")
    assert res["fidelity"]["passed"] and res["fidelity"]["n_differing_tokens"] == 0
    d = res["describe"]
    assert (d["architecture"], d["d_in"], d["d_sae"], d["apply_b_dec_to_input"]) == ("jumprelu", 2304, 4096, False)
    assert "threshold" in d
    hubcache.populate_hub_cache(cache, "google/gemma-scope-2b-pt-res", root)
    res_hub = pretrained.load_pretrained({**spec, "local_dir": None}, 0, "hook_embed", x, tmp_path / "hub")
    _assert_same_codes(formats.load_saelens(res["saelens_dir"]), formats.load_saelens(res_hub["saelens_dir"]), x)


def test_local_dir_never_touches_the_hub(hub, tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.file_download as fd

    def boom(*a, **kw):
        raise AssertionError("hub accessed")

    for mod in (huggingface_hub, fd):
        monkeypatch.setattr(mod, "hf_hub_download", boom)
    import sae_lens.loading.pretrained_sae_loaders as loaders
    import sparsify.sparse_coder as sc

    monkeypatch.setattr(loaders, "hf_hub_download", boom)
    monkeypatch.setattr(sc, "snapshot_download", boom)
    specs = [_spec(case[0], hub[case], "local") for case in CASES]
    # a registry release goes through SAE.from_pretrained with the converter's downloads answered locally
    root = tmp_path / "v5"
    tiny.write_tiny("saelens", root, LAYER, D_IN, D_SAE, HOOK, seed=0, k=K, sae_id=f"v5_32k_layer_{LAYER}.pt")
    specs.append({"format": "saelens", "release": "gpt2-small-resid-post-v5-32k", "id": TEMPLATES["saelens"],
                  "local_dir": str(root)})
    for spec in specs:
        assert pretrained.load_pretrained(spec, LAYER, HOOK, _x(64), tmp_path / "out")["fidelity"]["passed"]


def test_missing_files_and_bad_revisions(hub, tmp_path):
    for case in CASES:
        spec = _spec(case[0], hub[case], "local")
        with pytest.raises((FileNotFoundError, OSError)):
            pretrained.load_native({**spec, "local_dir": str(tmp_path / "empty")}, LAYER)
        with pytest.raises(Exception):  # noqa: B017 - each library raises its own not-found error
            pretrained.load_native({**_spec(case[0], hub[case], "hub"), "revision": "0" * 40}, LAYER)
        with pytest.raises(Exception):  # noqa: B017
            pretrained.load_native(_spec(case[0], hub[case], "hub"), LAYER + 1)


def test_spec_validation():
    ok = {"format": "sparsify", "release": "a/b", "id": "layers.{layer}"}
    assert pretrained.validate_spec(ok) == {**ok, "revision": None, "local_dir": None}
    assert pretrained.dict_id(ok, 3) == "layers.3"
    for bad in ({**ok, "format": "pickle"}, {**ok, "revison": "abc"}, {**ok, "release": ""},
                {**ok, "id": None}, {**ok, "revision": 3}, "spec"):
        with pytest.raises(ValueError):
            pretrained.validate_spec(bad)
    with pytest.raises(ValueError, match="template"):
        pretrained.dict_id({**ok, "id": "layers.{L}"}, 3)
    with pytest.raises(ValueError, match="neither"):
        pretrained.load_native({"format": "saelens", "release": "no-such-release", "id": "x"}, 0)


def test_hook_mismatch_and_bad_x(hub, tmp_path):
    case = ("saelens", "topk")
    spec = _spec("saelens", hub[case], "local")
    with pytest.raises(ValueError, match="hook"):
        pretrained.to_saelens(pretrained.load_native(spec, LAYER), spec, "blocks.0.hook_resid_pre")
    with pytest.raises(ValueError, match="d_in"):
        pretrained.load_pretrained(spec, LAYER, HOOK, _x(8, d=D_IN + 1), tmp_path)


class _Payload:
    """Unpickling this runs open(marker, "w"): a stand-in for arbitrary code in a malicious ae.pt."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_torch_load_is_weights_only(hub, tmp_path, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*a, **kw):
        calls.append(kw.get("weights_only"))
        return real_load(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    case = ("dictionary_learning", "standard")
    for source in ("local", "hub", "pinned"):
        pretrained.load_pretrained(_spec("dictionary_learning", hub[case], source), LAYER, HOOK, _x(32), tmp_path)
    assert calls and all(c is True for c in calls), calls

    # a planted malicious ae.pt is refused before any of its code runs
    root = tmp_path / "evil"
    folder = root / f"resid_out_layer{LAYER}" / "10_32768"
    folder.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"bias": _Payload(marker), "encoder.weight": torch.zeros(D_SAE, D_IN)}, folder / "ae.pt")
    spec = {"format": "dictionary_learning", "release": "evil/repo", "id": TEMPLATES["dictionary_learning"],
            "local_dir": str(root)}
    with pytest.raises(pickle.UnpicklingError):
        pretrained.load_pretrained(spec, LAYER, HOOK, _x(8), tmp_path / "out")
    assert not marker.exists()
    assert calls[-1] is True
    # control: the payload is live (a full unpickle would have run it)
    real_load(folder / "ae.pt", weights_only=False)["bias"].close()
    assert marker.exists()
