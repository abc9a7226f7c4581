"""saeflow.dictionaries.training: training, sparsify -> sae-lens conversion, encode fidelity, loading.

Synthetic activations with planted sparse structure: x = codes @ atoms + offset + noise (64 unit atoms
in 32 dims, 3 active per token, nonzero mean so b_dec matters); transcoder target y = x @ A.T +
codes @ atoms_out (a dense linear part for the skip connection plus a sparse part).
"""

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sae_lens")
pytest.importorskip("sparsify")

from saeflow.dictionaries import codes, fidelity, formats, training  # noqa: E402

D_IN, D_SAE, K, N_ATOMS, N_ACTIVE, BS = 32, 128, 8, 64, 3, 256
N_TOKENS = 300 * BS
LR = 1e-2
HOOK, HOOK_OUT = "blocks.0.hook_mlp_in", "blocks.0.hook_mlp_out"


def _planted(n, seed):
    g = torch.Generator().manual_seed(0)  # the same dictionary for every split
    atoms = torch.randn(N_ATOMS, D_IN, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    offset = 2 * torch.randn(D_IN, generator=g)
    A = torch.randn(D_IN, D_IN, generator=g) / D_IN**0.5
    atoms_out = torch.randn(N_ATOMS, D_IN, generator=g) / 2
    g = torch.Generator().manual_seed(seed)
    idx = torch.rand(n, N_ATOMS, generator=g).argsort(-1)[:, :N_ACTIVE]
    codes = torch.zeros(n, N_ATOMS).scatter(-1, idx, 0.5 + 1.5 * torch.rand(n, N_ACTIVE, generator=g))
    x = codes @ atoms + offset + 0.01 * torch.randn(n, D_IN, generator=g)
    return x, x @ A.T + codes @ atoms_out


TRAIN = _planted(8192, seed=1)
HELD_OUT = _planted(512, seed=2)


def _batches(transcode, data=TRAIN, bs=BS):
    x, y = data
    return lambda: ((x[i:i + bs], y[i:i + bs] if transcode else None) for i in range(0, len(x), bs))


L1 = 0.5  # saelens-relu: L0 ~ 10 (3 planted atoms per token), FVU ~ 0.1 after 300 steps


def _train(kind, out_dir, n_tokens=N_TOKENS, **kw):
    tc = kind in training.TRANSCODER_KINDS
    if kind not in training.TOPK_KINDS:
        kw.setdefault("l1_coefficient", L1)
    k = K if kind in training.TOPK_KINDS else None
    return training.train_dictionary(kind, _batches(tc), D_IN, D_SAE, k, n_tokens, BS, LR, seed=0, out_dir=out_dir,
                              hook_name=HOOK, hook_name_out=HOOK_OUT if tc else None,
                              check_batch=(HELD_OUT[0], HELD_OUT[1] if tc else None), progress=False, **kw)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Each kind trained once for the whole module."""
    return {kind: _train(kind, tmp_path_factory.mktemp(kind)) for kind in training.KINDS}


@pytest.mark.parametrize("kind", training.KINDS)
def test_training_reduces_fvu_and_logs_curve(results, kind):
    res = results[kind]
    assert all(set(row) == set(training.CURVE_FIELDS) for row in res.curve)
    steps = [row["step"] for row in res.curve]
    assert steps[0] == 1 and steps[-1] == N_TOKENS // BS and steps == sorted(steps)
    assert res.curve[-1]["tokens"] == N_TOKENS
    first, last = res.curve[0]["fvu"], res.curve[-1]["fvu"]
    assert last < 0.5 * first, (kind, first, last)
    assert 0 < last < 0.3
    topk = kind in training.TOPK_KINDS
    assert all(0 < row["l0"] <= (K if topk else D_SAE) and 0 <= row["dead_frac"] <= 1 for row in res.curve)
    # ReLU: sparsity comes from the L1 penalty alone, dense at the start and sparse by the end
    assert 0 < res.curve[-1]["l0"] <= (K if topk else D_SAE / 8) < res.curve[0]["l0"] or topk


@pytest.mark.parametrize("kind", training.KINDS)
def test_saelens_dir_reproduces_trained_model(results, kind):
    res = results[kind]
    sae = formats.load_saelens(res.saelens_dir)
    x, y = HELD_OUT
    with torch.no_grad():
        if kind in training.SAELENS_KINDS:
            expected = res.model.decode(res.model.encode(x))
        else:
            expected = res.model(x, y if kind in training.TRANSCODER_KINDS else None).sae_out
        got = codes.reconstruct(sae, x)
        f = codes.encode(sae, x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert sae.cfg.metadata.hook_name == HOOK
    if kind in training.TOPK_KINDS:
        assert ((f != 0).sum(-1) <= K).all()
    else:  # sae-lens' own ReLU SAE, and sparse: fewer than a tenth of the latents per token on average
        assert type(sae).__name__ == "StandardSAE" and (f != 0).sum(-1).float().mean() < D_SAE / 10
    if kind in training.TRANSCODER_KINDS:
        assert type(sae).__name__ == "TopKSkipTranscoder" and sae.cfg.metadata.hook_name_out == HOOK_OUT
        # decode() omits the skip term; reconstruct() adds it
        torch.testing.assert_close(codes.decode(sae, f) + x @ sae.W_skip.T, got)
        assert sae.W_skip.abs().max() > 0


@pytest.mark.parametrize("kind", ["sparsify-topk", "sparsify-skip-transcoder"])
def test_native_reload_and_fidelity(results, kind):
    res = results[kind]
    from sparsify import SparseCoder

    native = SparseCoder.load_from_disk(res.native_dir)
    for name, t in res.model.state_dict().items():
        assert torch.equal(native.state_dict()[name], t), name
    fid = res.fidelity
    assert fid["passed"] and fid["n_differing_tokens"] == 0
    assert fid["identical_active_frac"] * fid["n_tokens"] + fid["n_tied_tokens"] == fid["n_tokens"]
    assert fid["n_tokens"] == len(HELD_OUT[0]) and fid["max_abs_recon_diff"] < 1e-4


@pytest.mark.parametrize("kind", training.SAELENS_KINDS)
def test_saelens_kind_has_no_conversion(results, kind):
    res = results[kind]
    assert res.native_dir is None and res.fidelity is None
    assert sorted(p.name for p in res.saelens_dir.iterdir()) == ["cfg.json", "sae_weights.safetensors"]


def test_relu_kind_takes_l1_not_k(tmp_path):
    with pytest.raises(ValueError, match="k=None and l1_coefficient > 0"):
        training.train_dictionary("saelens-relu", _batches(False), D_IN, D_SAE, K, BS, BS, LR, 0, tmp_path, HOOK,
                                  l1_coefficient=1.0)
    with pytest.raises(ValueError, match="k=None and l1_coefficient > 0"):
        training.train_dictionary("saelens-relu", _batches(False), D_IN, D_SAE, None, BS, BS, LR, 0, tmp_path, HOOK)
    with pytest.raises(ValueError, match="l1_coefficient is only for saelens-relu"):
        training.train_dictionary("saelens-topk", _batches(False), D_IN, D_SAE, K, BS, BS, LR, 0, tmp_path, HOOK,
                                  l1_coefficient=1.0)


def test_wrong_conversion_is_detected(results):
    from sparsify import SparseCoder

    native = SparseCoder.load_from_disk(results["sparsify-topk"].native_dir)
    assert native.b_dec.abs().max() > 0.5  # the planted offset
    good = formats.convert_sparsify(native, HOOK)
    assert fidelity.check_encode_fidelity(native, good, HELD_OUT[0])["passed"]
    wrong = formats.convert_sparsify(native, HOOK)
    wrong.cfg.apply_b_dec_to_input = False  # seed 000's adapter bug
    fid = fidelity.check_encode_fidelity(native, wrong, HELD_OUT[0])
    assert not fid["passed"] and fid["jaccard_min"] < 1.0 and fid["max_abs_recon_diff"] > 1e-3
    assert fid["n_differing_tokens"] > 0.5 * fid["n_tokens"]  # not explained away as ties


def _tied_pair(delta_native: float, delta_converted: float):
    """A sparsify coder (k=3) and its sae-lens conversion on tokens where latents 2 and 3 compete for the
    last TopK slot: pre-activations 5, 4, 3 + delta_native, 3 (native) and 5, 4, 3, 3 + delta_converted
    (converted), so the native picks latent 2 and the conversion latent 3 when both deltas are > 0.
    Returns (native, converted, x): x holds 64 random tokens without ties and the tied token last."""
    from sparsify import SparseCoder, SparseCoderConfig

    d_in, d_sae = 8, 16
    coder = SparseCoder(d_in, SparseCoderConfig(num_latents=d_sae, k=3), device="cpu")
    with torch.no_grad():
        w = torch.zeros(d_sae, d_in)
        w[:d_in] = torch.eye(d_in)
        w[d_in:] = -torch.eye(d_in)
        coder.encoder.weight.copy_(w)
        coder.encoder.bias.zero_()
        coder.encoder.bias[2] = delta_native
        coder.b_dec.zero_()
        coder.W_dec.copy_(torch.randn(d_sae, d_in, generator=torch.Generator().manual_seed(0)))
    converted = formats.convert_sparsify(coder, HOOK)
    with torch.no_grad():
        converted.b_enc[2] = 0.0
        converted.b_enc[3] = delta_converted
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, d_in, generator=g).abs() * torch.arange(d_in, 0, -1) + 0.5 * torch.arange(d_in, 0, -1)
    tie = torch.tensor([[5.0, 4.0, 3.0, 3.0, 1.0, 0.5, 0.2, 0.1]])
    return coder, converted, torch.cat([x, tie])


def test_float_tie_at_topk_boundary_passes():
    """The fresh-machine failure of issue 12: the k-th and (k+1)-th pre-activations 2.4e-7 apart, and the
    two modules' kernels break the tie differently. That is a tie, not a conversion error."""
    native, converted, x = _tied_pair(2.4e-7, 2.4e-7)
    fid = fidelity.check_encode_fidelity(native, converted, x)
    assert fid["identical_active_frac"] < 1.0 and fid["jaccard_min"] < 1.0  # the sets really differ
    assert fid["passed"] and fid["n_tied_tokens"] == 1 and fid["n_differing_tokens"] == 0
    assert fid["rel_recon_diff"] < fidelity.FIDELITY_RTOL  # tied latents' contributions accounted for


def test_exact_tie_passes_whichever_latent_wins():
    native, converted, x = _tied_pair(0.0, 0.0)
    fid = fidelity.check_encode_fidelity(native, converted, x)
    assert fid["passed"] and fid["n_differing_tokens"] == 0 and fid["n_tied_tokens"] <= 1


@pytest.mark.parametrize("factor, passes", [(0.5, True), (1.5, False)])
def test_near_tie_beyond_the_tolerance_fails(factor, passes):
    delta = factor * fidelity.TIE_RTOL * 3.0  # the boundary pre-activation is 3
    native, converted, x = _tied_pair(delta, delta)
    fid = fidelity.check_encode_fidelity(native, converted, x)
    assert fid["identical_active_frac"] < 1.0
    assert fid["passed"] is passes and fid["n_tied_tokens"] == int(passes)
    assert fid["n_differing_tokens"] == int(not passes)


def test_selection_scores_reproduce_each_modules_active_set(results):
    """The boundary rule of selection_scores gives exactly the active sets encode() returns (TopK SAE,
    TopK skip transcoder, sae-lens TopK), so ties are judged on the scores the modules select on."""
    x = HELD_OUT[0][:256]
    for kind in ("sparsify-topk", "sparsify-skip-transcoder", "saelens-topk"):
        for module in (results[kind].model, formats.load_saelens(results[kind].saelens_dir)):
            with torch.no_grad():
                s, b, k = codes.selection_scores(module, x)
                active = codes.encode(module, x) > 0
            assert k == K and torch.equal(active, (s >= b) & (s > 0)), kind


def test_failed_fidelity_fails_training(tmp_path, monkeypatch):
    real = formats.convert_sparsify

    def buggy(coder, hook_name, hook_name_out=None):
        sae = real(coder, hook_name, hook_name_out)
        sae.cfg.apply_b_dec_to_input = False
        return sae

    monkeypatch.setattr(training, "convert_sparsify", buggy)
    with pytest.raises(RuntimeError, match="jaccard_min"):
        _train("sparsify-topk", tmp_path, n_tokens=20 * BS)


def test_deterministic_for_a_seed(tmp_path):
    a = _train("sparsify-topk", tmp_path / "a", n_tokens=20 * BS, log_every=1)
    b = _train("sparsify-topk", tmp_path / "b", n_tokens=20 * BS, log_every=1)
    assert a.curve == b.curve and len(a.curve) == 20
    assert all(torch.equal(a.model.state_dict()[n], t) for n, t in b.model.state_dict().items())


def test_rebatch_cuts_exact_batches_across_epochs():
    x = torch.arange(10 * 2, dtype=torch.float32).reshape(10, 2)
    ragged = lambda: ((x[i:i + 3], None) for i in range(0, 10, 3))  # noqa: E731  (3, 3, 3, 1 rows)
    out = [bx for bx, _ in training._rebatch(ragged, 4, 6, want_y=False)]
    assert [len(b) for b in out] == [4] * 6
    assert torch.equal(torch.cat(out), torch.cat([x, x, x[:4]]))


@pytest.mark.parametrize("kw, match", [
    (dict(kind="bogus"), "sparsify-topk, sparsify-skip-transcoder, saelens-topk"),
    (dict(k=D_SAE), "k must be < d_sae"),
    (dict(k=0), "k must be a positive integer"),
    (dict(n_tokens=BS - 1), "n_tokens"),
    (dict(lr=-1.0), "lr must be"),
    (dict(kind="sparsify-skip-transcoder"), "hook_name_out is required"),
])
def test_bad_arguments(tmp_path, kw, match):
    args = dict(kind="sparsify-topk", batches=_batches(False), d_in=D_IN, d_sae=D_SAE, k=K, n_tokens=N_TOKENS,
                batch_size=BS, lr=None, seed=0, out_dir=tmp_path, hook_name=HOOK)
    with pytest.raises(ValueError, match=match):
        training.train_dictionary(**{**args, **kw})


def test_batches_must_match_kind(tmp_path):
    with pytest.raises(ValueError, match="must yield y"):
        training.train_dictionary("sparsify-skip-transcoder", _batches(False), D_IN, D_SAE, K, BS, BS, None, 0,
                           tmp_path, HOOK, HOOK_OUT, progress=False)


def test_module_import_is_light():
    code = "import sys, saeflow.dictionaries.training; print(any(m in sys.modules for m in ('torch', 'sae_lens', 'sparsify')))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("kind", training.KINDS)
def test_a_nan_activation_fails_training_at_its_step(tmp_path, kind):
    """A NaN in the activations (a bad cache) fails the job at the step that meets it, naming the step and
    the batch, instead of training to NaN weights that are then stored as complete."""
    x, y = TRAIN[0].clone(), TRAIN[1].clone()
    x[5 * BS + 3, 7] = float("nan")  # in the 6th batch of the (unshuffled) stream
    tc = kind in training.TRANSCODER_KINDS
    with pytest.raises(FloatingPointError, match=r"at step 6 .*non-finite activations"):
        topk = kind in training.TOPK_KINDS
        training.train_dictionary(kind, _batches(tc, (x, y)), D_IN, D_SAE, K if topk else None, 20 * BS, BS, LR,
                                  seed=0, out_dir=tmp_path, hook_name=HOOK, hook_name_out=HOOK_OUT if tc else None,
                                  progress=False, l1_coefficient=None if topk else L1)
    assert not any(tmp_path.iterdir()), "nothing is saved"


def test_divergence_is_named_as_such(tmp_path):
    with pytest.raises(FloatingPointError, match="the batch is finite: training diverged"):
        training.train_dictionary("sparsify-topk", _batches(False), D_IN, D_SAE, K, 20 * BS, BS, 1e30, seed=0,
                           out_dir=tmp_path, hook_name=HOOK, progress=False)


@pytest.mark.parametrize("kind", ["sparsify-topk", "saelens-topk"])
def test_a_rebuilt_dictionary_has_the_same_file_hashes(tmp_path, kind):
    """The same inputs give the same bytes (canonical JSON: sae-lens' cfg.json key order varies)."""
    from saeflow.workflow import store

    a = _train(kind, tmp_path / "a", n_tokens=20 * BS)
    b = _train(kind, tmp_path / "b", n_tokens=20 * BS)
    ha, hb = store.file_hashes(tmp_path / "a"), store.file_hashes(tmp_path / "b")
    assert ha == hb and any(p.endswith("cfg.json") for p in ha)
    cfg = (a.saelens_dir / "cfg.json").read_text()
    import json

    assert list(json.loads(cfg)) == sorted(json.loads(cfg)) and b.saelens_dir.is_dir()


@pytest.mark.parametrize("kind,hook,hook_out,hookpoint", [
    ("sparsify-topk", "blocks.2.hook_resid_post", None, "layers.2"),
    ("sparsify-skip-transcoder", "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out", "layers.1.mlp"),
    ("saelens-topk", "blocks.2.hook_resid_post", None, None)])
def test_saved_dictionaries_open_in_other_tools(tmp_path, kind, hook, hook_out, hookpoint):
    """sae-lens' cfg.json carries what SAEBench / sae-dashboard read (model, hooks, context size, BOS, dataset), back
    through SAE.load_from_disk; sparsify's folder is its own layout (<hookpoint>/, read by SparseCoder.load_many)
    with an expansion_factor that agrees with num_latents."""
    from sae_lens import SAE
    from sparsify import SparseCoder

    md = {"model_name": "gpt2", "model_revision": "0" * 40, "hook_name": hook, "context_size": 128,
          "prepend_bos": True, "dataset_path": "Salesforce/wikitext", "dataset_revision": "1" * 40,
          "model_from_pretrained_kwargs": {}, **({"hook_name_out": hook_out} if hook_out else {})}
    tc = kind in training.TRANSCODER_KINDS
    res = training.train_dictionary(kind, _batches(tc), D_IN, D_SAE, K, 4 * BS, BS, LR, seed=0, out_dir=tmp_path,
                                    hook_name=hook, hook_name_out=hook_out, progress=False, metadata=md)
    formats.register_saelens_classes()
    sae = SAE.load_from_disk(str(res.saelens_dir))
    for key, value in md.items():
        assert sae.cfg.metadata[key] == value, key
    assert sae.cfg.normalize_activations == "none"
    if hookpoint is None:
        assert res.native_dir is None
        return
    assert res.native_dir == tmp_path / "native" / hookpoint
    coders = SparseCoder.load_many(str(tmp_path / "native"), local=True)
    assert list(coders) == [hookpoint]
    cfg = coders[hookpoint].cfg
    assert cfg.num_latents == D_SAE and cfg.expansion_factor * D_IN == D_SAE and cfg.transcode == tc
    assert formats.sparsify_hookpoint("blocks.3.hook_resid_pre") == "blocks.3.hook_resid_pre"
