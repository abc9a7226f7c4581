"""saeflow.evals.ablation against closed forms: with the error term kept and nothing ablated the logits are
the clean ones bit for bit; zero / mean ablation of a set S moves the site by exactly -f_S W_dec[S] /
(mean_S - f_S) W_dec[S] (BOS untouched); the null sets are seeded, disjoint from S and the effect is the
mean margin drop computed directly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer

from saeflow.dictionaries import codes
from saeflow.evals import ablation
from saeflow.models.lm import make_config

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def setup():
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    model = HookedTransformer(make_config({"n_layers": 2, "d_model": 16, "n_heads": 2, "d_mlp": 32, "act_fn": "gelu",
                                           "n_ctx": 16}, 30)).eval()
    sae = StandardSAE(StandardSAEConfig(d_in=16, d_sae=32, metadata=SAEMetadata(hook_name=HOOK)))
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec, sae.b_dec):
            p.copy_(torch.randn_like(p) * 0.5)
        sae.b_enc.fill_(0.1)
    g = np.random.default_rng(0)
    tokens = g.integers(1, 30, size=(8, 10))
    tokens[:, 0] = 0
    return model, sae.eval(), tokens, g.integers(0, 2, 8)


def _site(model, tokens, hooks=()):
    with model.hooks(fwd_hooks=list(hooks)):
        _, cache = model.run_with_cache(torch.as_tensor(tokens), names_filter=[HOOK])
    return cache[HOOK]


def test_nothing_ablated_is_the_clean_model_bit_for_bit(setup):
    model, sae, tokens, _ = setup
    t = torch.as_tensor(tokens)
    clean = model(t)
    for latents in (None, []):
        with ablation.ablated(model, HOOK, sae, latents):
            assert torch.equal(model(t), clean)
    # the spliced path itself, with an edit that changes no code (a latent that never fires), is exact too:
    # decode(f') - decode(f) = 0, so the site is x + 0
    import copy

    quiet = copy.deepcopy(sae)
    with torch.no_grad():
        quiet.b_enc[4] = -1e6
    with ablation.ablated(model, HOOK, quiet, [4]):
        assert torch.equal(model(t), clean)


@pytest.mark.parametrize("mode", ablation.MODES)
def test_ablation_moves_the_site_by_the_closed_form(setup, mode):
    model, sae, tokens, _ = setup
    x = _site(model, tokens)
    f = codes.encode(sae, x.reshape(-1, 16)).reshape(*x.shape[:2], -1)
    S = [1, 5, 7]
    mean = f[:, 1:].reshape(-1, f.shape[-1]).mean(0)
    got = _site(model, tokens, [(HOOK, ablation.splice_hook(sae, S, mode, mean))])
    target = torch.zeros_like(f[..., S]) if mode == "zero" else mean[S].expand_as(f[..., S])
    expected = x + (target - f[..., S]) @ sae.W_dec[S]
    expected[:, 0] = x[:, 0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_nulls_are_seeded_disjoint_and_the_effect_is_the_direct_drop(setup):
    model, sae, tokens, labels = setup
    a_ids, b_ids = {3, 4, 5}, {10, 11}
    S = [2, 9]
    alive = np.arange(32)
    r = ablation.ablation_with_nulls(model, HOOK, sae, tokens, labels, a_ids, b_ids, S, alive, n_null=5, seed=3)
    again = ablation.ablation_with_nulls(model, HOOK, sae, tokens, labels, a_ids, b_ids, S, alive, n_null=5, seed=3)
    assert r == again and len(r["null"]) == 5 and 0 <= r["quantile"] <= 1 and r["k"] == 2
    clean = ablation.class_margin(model, tokens, labels, a_ids, b_ids)
    with ablation.ablated(model, HOOK, sae, S):
        abl = ablation.class_margin(model, tokens, labels, a_ids, b_ids)
    assert r["effect"] == pytest.approx(float((clean - abl).mean()), abs=1e-12)
    # m(w): sign by label, mean over positions >= 1 of mean logit(A) - mean logit(B)
    logits = model(torch.as_tensor(tokens))[:, 1:].double()
    ref = (logits[..., sorted(a_ids)].mean(-1) - logits[..., sorted(b_ids)].mean(-1)).mean(1).detach().numpy()
    np.testing.assert_allclose(clean, np.where(labels == 1, 1, -1) * ref, rtol=1e-10)
    with pytest.raises(ValueError, match="no null set"):
        ablation.ablation_with_nulls(model, HOOK, sae, tokens, labels, a_ids, b_ids, S, np.array([2, 9, 4]))


def test_answer_tokens_are_the_most_over_and_under_represented():
    pos = np.array([[1, 1, 2], [1, 3, 2]])
    neg = np.array([[4, 4, 2], [4, 3, 2]])
    a, b = ablation.answer_tokens(np.vstack([pos, neg]), np.array([1, 1, 0, 0], bool), d_vocab=6, n=1)
    assert a == {1} and b == {4}   # 1 only in positives, 4 only in negatives; 2 and 3 balanced
