"""saeflow.evals.influence: batched feature influence == the seed's per-latent reference, closed forms, edge cases.

Tiny random-init TransformerLens models (LN + gelu, RMS + silu) with random sae-lens dictionaries of every
kind we read: TopK SAE (b_dec != 0, applied to the input), ReLU StandardSAE, JumpReLU SAE, and a sparsify
skip transcoder on the MLP input converted by ``saeflow.dictionaries.formats.convert_sparsify``.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformer_lens")
pytest.importorskip("sae_lens")
pytest.importorskip("sparsify")

from ties import matched_latents  # noqa: E402

from saeflow.evals import influence as I  # noqa: E402
from saeflow.workflow.plan import hook_name  # noqa: E402

T = 10
ARCHS = {
    "ln-gelu": dict(n_layers=2, d_model=32, n_heads=4, d_mlp=64, act_fn="gelu", normalization_type="LN"),
    "rms-silu": dict(n_layers=3, d_model=24, n_heads=3, d_mlp=48, act_fn="silu", normalization_type="RMS"),
}


def _model(arch):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    a = ARCHS[arch]
    cfg = HookedTransformerConfig(**a, d_head=a["d_model"] // a["n_heads"], n_ctx=16, d_vocab=64, seed=0,
                                  positional_embedding_type="standard")
    return HookedTransformer(cfg).eval()


def _randomise(sae, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "threshold":
                p.copy_(0.05 + 0.2 * torch.rand(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[0] if p.ndim == 2 else 4))
    return sae.eval()


def _dicts(arch, combo):
    """combo "topk-jump" (threshold 0): TopK on layer 0 resid_post + JumpReLU on the last resid_post;
    combo "relu-skip" (threshold 0.1): ReLU SAE on layer 0 resid_post + skip transcoder on layer 1 MLP input."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
    from sparsify import SparseCoder, SparseCoderConfig

    from saeflow.dictionaries.formats import convert_sparsify

    d, last = ARCHS[arch]["d_model"], ARCHS[arch]["n_layers"] - 1
    if combo == "topk-jump":
        topk = _randomise(TopKSAE(TopKSAEConfig(d_in=d, d_sae=96, k=6, apply_b_dec_to_input=True,
                                                rescale_acts_by_decoder_norm=False)), 1)
        jump = _randomise(JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=80, apply_b_dec_to_input=True)), 2)
        return {0: I.DictSpec(topk, hook_name("resid_post", 0)), last: I.DictSpec(jump, hook_name("resid_post", last))}, 0.0
    relu = _randomise(StandardSAE(StandardSAEConfig(d_in=d, d_sae=96)), 3)
    torch.manual_seed(4)
    coder = SparseCoder(d, SparseCoderConfig(num_latents=64, k=8, transcode=True, skip_connection=True),
                        device="cpu", dtype=torch.float32)
    with torch.no_grad():
        coder.encoder.bias.normal_(0, 0.3)
        coder.b_dec.normal_()
    skip = convert_sparsify(coder, hook_name("mlp_in", 1), hook_name("mlp_out", 1))
    return {0: I.DictSpec(relu, hook_name("resid_post", 0)), 1: I.DictSpec(skip, hook_name("mlp_in", 1))}, 0.1


def _tokens(seed=0):
    return torch.randint(0, 64, (T,), generator=torch.Generator().manual_seed(seed))


_REF = {}


def _setup(arch, combo):
    if (arch, combo) not in _REF:
        model, (dicts, thr) = _model(arch), _dicts(arch, combo)
        _REF[arch, combo] = model, dicts, thr, I.window_influence_reference(model, _tokens(), dicts, thr)
    return _REF[arch, combo]


def _assert_same(b, r, token_vector=True, thr=None):
    assert sorted(b) == sorted(r)
    for L in r:
        x, y = b[L], r[L]
        assert x.J.shape == (len(x.latents), T) and y.J.shape == (len(y.latents), T)
        ix, iy = matched_latents(x.latents, x.activations, y.latents, y.activations, threshold=thr)
        np.testing.assert_allclose(x.activations[ix], y.activations[iy], rtol=1e-6, atol=1e-7)
        if len(iy):
            assert np.abs(x.J[ix] - y.J[iy]).max() <= 1e-4 * y.J.max()
            np.testing.assert_allclose(x.H[ix], y.H[iy], atol=1e-4)
        if token_vector:
            assert np.abs(x.R - y.R).max() <= 1e-4 * y.R.max()
            assert abs(x.H_token - y.H_token) <= 1e-4
        else:
            assert x.R is None and x.H_token is None


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("combo", ["topk-jump", "relu-skip"])
@pytest.mark.parametrize("method", ["auto", "site", "latent"])
def test_batched_equals_reference(arch, combo, method):
    model, dicts, thr, ref = _setup(arch, combo)
    assert all(len(r.latents) > 0 for r in ref.values())  # every dictionary contributes
    got = I.window_influence(model, _tokens(), dicts, thr, method=method)
    _assert_same(got, ref, thr=thr)
    assert {g.method for g in got.values()} == ({"site"} if method == "auto" else {method})
    if method == "auto":
        # without the token vector, auto picks per layer: latent when F < d_site
        got = I.window_influence(model, _tokens(), dicts, thr, token_vector=False)
        _assert_same(got, ref, token_vector=False, thr=thr)
        d = ARCHS[arch]["d_model"]
        assert all(g.method == ("site" if len(g.latents) >= d else "latent") for g in got.values())


def test_entropy_range_and_strict_threshold():
    model, dicts, thr, ref = _setup("ln-gelu", "topk-jump")
    for r in ref.values():
        assert np.all(r.H >= -1e-9) and np.all(r.H <= math.log2(T) + 1e-9)
        assert np.all(r.activations > thr)
    # threshold equal to an actual activation: that latent (and any below) is excluded
    L = 0
    v = float(np.sort(ref[L].activations)[len(ref[L].activations) // 2])
    got = I.window_influence(model, _tokens(), {L: dicts[L]}, v)
    keep = ref[L].activations > v
    assert 0 < keep.sum() < len(keep)
    ig, ir = matched_latents(got[L].latents, got[L].activations, ref[L].latents[keep], ref[L].activations[keep],
                             threshold=v)
    assert np.all(got[L].activations > v)
    np.testing.assert_allclose(got[L].J[ig], ref[L].J[keep][ir], rtol=1e-4, atol=1e-4 * ref[L].J.max())


def test_chunking_and_max_latents():
    model, dicts, thr, ref = _setup("rms-silu", "relu-skip")
    for method in ("site", "latent"):
        tiny = I.window_influence(model, _tokens(), dicts, thr, method=method, memory_budget_mb=1e-6)  # 1-row chunks
        big = I.window_influence(model, _tokens(), dicts, thr, method=method, memory_budget_mb=1e4)
        _assert_same(tiny, ref, thr=thr)
        _assert_same(big, ref, thr=thr)
    got = I.window_influence(model, _tokens(), dicts, thr, max_latents=3)
    for L, r in ref.items():
        top = np.sort(r.latents[np.argsort(-r.activations, kind="stable")[:3]])
        sel = np.isin(r.latents, top)
        ig, ir = matched_latents(got[L].latents, got[L].activations, r.latents[sel], r.activations[sel])
        assert np.abs(got[L].J[ig] - r.J[sel][ir]).max() <= 1e-4 * r.J.max()
        np.testing.assert_allclose(got[L].R, r.R, rtol=1e-4, atol=1e-4 * r.R.max())


@pytest.mark.parametrize("method", ["site", "latent"])
@pytest.mark.parametrize("d_site", [4, 12])
def test_closed_form_linear(method, d_site):
    """y(T-1) = sum_t A_t e_t and f = relu(y W + b): J_a(t) = ||A_t^T W[:, a]||^2, R(t) = ||A_t||_F^2.
    d_site 4 < F exercises the stored-G path, d_site 12 the accumulated W G path."""
    g = torch.Generator().manual_seed(0)
    Tn, d_leaf, d_sae = 7, 5, 40
    A = torch.randn(Tn, d_site, d_leaf, generator=g, dtype=torch.float64)
    Wenc = torch.randn(d_site, d_sae, generator=g, dtype=torch.float64)
    b = torch.randn(d_sae, generator=g, dtype=torch.float64)
    e = torch.randn(Tn, d_leaf, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.einsum("tsd,td->s", A, e)
    res = I._influence_from_leaf(e, {3: y}, {3: lambda x: torch.relu(x @ Wenc + b)}, 0.0, method=method,
                                 memory_budget_mb=1e-3)[3]
    f = torch.relu(y.detach() @ Wenc + b)
    active = torch.nonzero(f > 0).flatten()
    assert method == "latent" or d_site == 12 or len(active) > d_site
    J = torch.einsum("tsd,sa->atd", A, Wenc[:, active]).square().sum(-1)
    R = A.square().sum((1, 2))
    np.testing.assert_array_equal(res.latents, active.numpy())
    np.testing.assert_allclose(res.J, J.numpy(), rtol=1e-6)
    np.testing.assert_allclose(res.R, R.numpy(), rtol=1e-6)
    np.testing.assert_allclose(res.H, I.entropy_bits(J.numpy()), atol=1e-5)
    assert res.H_token == pytest.approx(float(I.entropy_bits(R.numpy())), abs=1e-5)


def test_entropy_bits():
    assert I.entropy_bits(np.ones(16)) == pytest.approx(4.0, abs=1e-12)
    assert I.entropy_bits(np.eye(8)[3] * 5.0) < 1e-8
    J = np.random.default_rng(0).random((6, 9)) ** 4
    np.testing.assert_allclose(I.entropy_bits(torch.tensor(J)).numpy(), I.entropy_bits(J), atol=1e-12)
    assert np.all((I.entropy_bits(J) >= 0) & (I.entropy_bits(J) <= math.log2(9)))


def test_bad_input_and_state():
    model, dicts, thr, _ = _setup("ln-gelu", "topk-jump")
    with pytest.raises(ValueError, match="method"):
        I.window_influence(model, _tokens(), dicts, thr, method="fast")
    with pytest.raises(ValueError, match="tokens"):
        I.window_influence(model, torch.zeros(2, 3, dtype=torch.long), dicts, thr)
    with pytest.raises(ValueError, match="threshold"):
        I.window_influence(model, _tokens(), dicts, float("nan"))
    with pytest.raises(ValueError, match="max_latents"):
        I.window_influence(model, _tokens(), dicts, thr, max_latents=0)
    with pytest.raises(ValueError, match="hook_in"):
        I.window_influence(model, _tokens(), {0: I.DictSpec(dicts[0].module, "blocks.0.hook_nowhere")}, thr)
    assert all(p.requires_grad for p in model.parameters())  # parameters unfrozen again
    with torch.no_grad():  # works under a caller's no_grad
        I.window_influence(model, _tokens(), {0: dicts[0]}, thr)


def test_import_is_light():
    code = "import sys, saeflow.evals.influence; assert 'torch' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
