"""What a latent writes (saeflow.evals.decoder): logit weights through the final LayerNorm equal those of the
same model with the LayerNorm folded into W_U (TransformerLens' own processing), a planted unembedding direction
is the top promoted token, and nearest latents by decoder cosine match a brute-force sort across chunks."""
import numpy as np
import pytest
import torch

from saeflow.evals import decoder
from saeflow.models.lm import make_config


@pytest.fixture(scope="module")
def model():
    from transformer_lens import HookedTransformer

    torch.manual_seed(0)
    arch = {"n_layers": 1, "d_model": 16, "n_heads": 2, "d_mlp": 32, "act_fn": "gelu", "n_ctx": 8}
    m = HookedTransformer(make_config(arch, 50)).eval()
    with torch.no_grad():
        m.ln_final.w.copy_(1 + 0.5 * torch.randn(16))
    return m


def test_logit_weights_equal_the_folded_layernorm(model):
    from transformer_lens import HookedTransformer

    rows = torch.randn(5, 16)
    got = decoder.logit_weights(model, rows)
    folded = HookedTransformer(model.cfg, tokenizer=None)
    folded.load_state_dict(model.state_dict())
    folded.process_weights_(fold_ln=True, center_writing_weights=False, center_unembed=False)
    assert folded.cfg.normalization_type == "LNPre"
    np.testing.assert_allclose(got.numpy(), decoder.logit_weights(folded, rows).numpy(), rtol=1e-4, atol=1e-5)
    # closed form: (w * (v - mean v)) @ W_U
    v = rows - rows.mean(-1, keepdim=True)
    np.testing.assert_allclose(got.numpy(), ((v * model.ln_final.w) @ model.W_U).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_planted_direction_promotes_its_token(model):
    class Tok:
        def batch_decode(self, ids, clean_up_tokenization_spaces=False):
            return [f"tok{i[0]}" for i in ids]

    W_U = model.W_U.detach()
    target = 17
    # the direction whose logit weights are largest at `target`: the least-squares preimage of a one-hot row
    want = torch.full((50,), -1.0)
    want[target] = 5.0
    v = torch.linalg.lstsq((W_U.T * model.ln_final.w.detach()), want[:, None]).solution[:, 0]
    v = v - v.mean()
    out = decoder.top_tokens(decoder.logit_weights(model, v[None]), 3, Tok())[0]
    assert out["promoted"][0][0] == f"tok{target}"
    assert [w for _, w in out["promoted"]] == sorted((w for _, w in out["promoted"]), reverse=True)
    assert [w for _, w in out["suppressed"]] == sorted(w for _, w in out["suppressed"])


def test_nearest_latents_match_brute_force_across_chunks():
    g = np.random.default_rng(0)
    W = g.normal(size=(37, 6)).astype(np.float32)
    W[5] = W[3] * 2.0            # parallel to 3: cosine 1
    W[9] = W[3] * 2.0            # a tie with 5 at cosine 1: lower id first
    lat = [3, 0, 36]
    ids, cos = decoder.nearest_latents(torch.as_tensor(W), lat, 4, chunk=10)
    U = W / np.linalg.norm(W, axis=1, keepdims=True)
    for r, a in enumerate(lat):
        c = U @ U[a]
        c[a] = -np.inf
        order = sorted(range(len(W)), key=lambda b: (-round(float(c[b]), 5), b))[:4]
        assert ids[r].tolist() == order, (a, ids[r], order)
        np.testing.assert_allclose(cos[r], c[order], rtol=1e-5)
    assert ids[0][:2].tolist() == [5, 9] and cos[0][0] == pytest.approx(1.0)
