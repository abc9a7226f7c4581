"""Tests for saeflow.evals.recon.evaluate_recon: against sae-lens run_evals, and closed-form cases.

Small random HookedTransformer (2 layers, d_model 32, vocab 64) and random-weight sae-lens SAEs; tokens
are random ids in [1, 64) with BOS id 0 at position 0 only, so sae-lens' special-token masking
(by token id) and ours (by position 0) select the same tokens.
"""

import json

import numpy as np
import pytest
import torch

from saeflow.evals.recon import evaluate_recon

BOS, N_SEQ, T, D = 0, 24, 16, 32
SITE = "blocks.0.hook_mlp_out"
HEADLINES = ("fvu", "ev", "l0", "ce_clean", "ce_dict", "ce_zero", "ce_recovered", "kl")


@pytest.fixture(scope="module")
def model():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=D, d_head=8, n_heads=4, d_mlp=64, d_vocab=64, n_ctx=32,
                                  act_fn="gelu", normalization_type="LN", seed=0)
    return HookedTransformer(cfg).eval()


@pytest.fixture(scope="module")
def tokens():
    tok = torch.randint(1, 64, (N_SEQ, T), generator=torch.Generator().manual_seed(0))
    tok[:, 0] = BOS
    return tok


def make_sae(kind, hook=SITE, d_sae=128):
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(1)
    meta = SAEMetadata(hook_name=hook)
    if kind == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=D, d_sae=d_sae, metadata=meta))
    else:
        sae = TopKSAE(TopKSAEConfig(d_in=D, d_sae=d_sae, k=8, metadata=meta))
    with torch.no_grad():  # random but not absurd reconstructions (FVU ~ 1), some latents silent
        sae.W_dec.mul_(0.1)
        sae.b_enc.normal_(-0.3, 0.3)
    return sae


class _Store:
    """The part of sae-lens' ActivationsStore that run_evals touches, serving fixed in-memory tokens."""

    def __init__(self, tokens, batch):
        self.tokens, self.store_batch_size_prompts, self.context_size, self.i = tokens, batch, tokens.shape[1], 0

    def get_batch_tokens(self, n):
        self.i += n
        return self.tokens[self.i - n:self.i]

    def reset_input_dataset(self):
        self.i = 0


@pytest.mark.parametrize("kind", ["standard", "topk"])
@pytest.mark.parametrize("exclude_bos", [True, False])
def test_matches_sae_lens_run_evals(model, tokens, kind, exclude_bos):
    """EV, L0, CE clean/SAE/ablation, CE score, KL and feature density vs sae_lens.evals.run_evals.

    Matched settings: exclude_bos=True <-> exclude_special_tokens=[BOS] (BOS only at position 0);
    exclude_bos=False <-> exclude_special_tokens=False. sae-lens averages CE over predictions made from
    non-special positions and KL over all non-special positions, splices the SAE output at non-special
    positions only and zero-ablates every position; evaluate_recon does the same by default. Its
    ``explained_variance`` is 1 - sum SSE / (sum||x||^2 - N||mean||^2) over all tokens (not the per-batch
    ``explained_variance_legacy``), i.e. exactly our EV.
    """
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler

    sae, bs = make_sae(kind), 8
    cfg = EvalConfig(batch_size_prompts=bs, n_eval_reconstruction_batches=N_SEQ // bs, compute_kl=True,
                     compute_ce_loss=True, n_eval_sparsity_variance_batches=N_SEQ // bs,
                     compute_sparsity_metrics=True, compute_variance_metrics=True,
                     compute_featurewise_density_statistics=True)
    ref, feat = run_evals(sae, _Store(tokens, bs), model, ActivationScaler(), cfg,
                          exclude_special_tokens=[BOS] if exclude_bos else False)
    ours, _ = evaluate_recon(model, sae, tokens, SITE, batch_size=bs, exclude_bos=exclude_bos, n_resamples=50)

    perf, beh = ref["model_performance_preservation"], ref["model_behavior_preservation"]
    pairs = {"ev": ref["reconstruction_quality"]["explained_variance"], "l0": ref["sparsity"]["l0"],
             "ce_clean": perf["ce_loss_without_sae"], "ce_dict": perf["ce_loss_with_sae"],
             "ce_zero": perf["ce_loss_with_ablation"], "ce_recovered": perf["ce_loss_score"],
             "kl": beh["kl_div_with_sae"]}
    # Non-degenerate comparison: the three CEs differ, some latents fire and some do not.
    assert ours["ce_clean"]["value"] < ours["ce_dict"]["value"] - 1e-2 < ours["ce_zero"]["value"] - 2e-2
    assert 0 < ours["dead_frac"] < 1 and 0 < ours["dense_frac"] < 1
    # sae-lens averages float32 tensors, we accumulate in float64: agreement ~1e-7 relative; the CE score
    # (a ratio of CE differences ~0.05) amplifies that to ~1e-5.
    for key, theirs in pairs.items():
        assert ours[key]["value"] == pytest.approx(theirs, rel=1e-4 if key == "ce_recovered" else 2e-6), key
    density = np.asarray(feat["feature_density"])
    assert ours["dead_frac"] == pytest.approx(np.mean(density == 0))
    assert ours["dense_frac"] == pytest.approx(np.mean(density > 0.1))
    assert ours["n_tokens"] == N_SEQ * (T - exclude_bos)


def test_fvu_formula_and_outputs(model, tokens):
    sae = make_sae("standard")
    summ, per = evaluate_recon(model, sae, tokens, SITE, batch_size=5, n_resamples=200)
    _, cache = model.run_with_cache(tokens, names_filter=[SITE])
    x = cache[SITE][:, 1:].reshape(-1, D).double()
    x_hat = sae.decode(sae.encode(cache[SITE]))[:, 1:].reshape(-1, D).double()
    fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert summ["fvu"]["value"] == pytest.approx(fvu.item(), rel=1e-10)
    assert summ["ev"]["value"] == pytest.approx(1 - fvu.item(), rel=1e-10)
    # Batch size must not matter; the headline CIs bracket their values and the output is JSON.
    summ16, _ = evaluate_recon(model, sae, tokens, SITE, batch_size=16, n_resamples=200)
    for k in HEADLINES:
        assert summ16[k]["value"] == pytest.approx(summ[k]["value"], rel=1e-5, abs=1e-7), k
        assert summ[k]["lo"] <= summ[k]["value"] <= summ[k]["hi"], k
    json.dumps(summ)
    assert {len(v) for v in per.values()} == {N_SEQ} and all(v.ndim == 1 for v in per.values())
    assert per["sse"].sum() / per["sst"].sum() == pytest.approx(summ["fvu"]["value"], rel=1e-12)
    assert sum(summ["firing_freq_hist"]["counts"]) + summ["firing_freq_hist"]["n_dead"] == 128


def test_identity_dictionary(model, tokens):
    s, _ = evaluate_recon(model, None, tokens, SITE, encode=lambda x: x, decode=lambda f: f, n_resamples=50)
    assert s["fvu"]["value"] == 0.0 and s["ev"]["value"] == 1.0
    assert s["ce_dict"]["value"] == s["ce_clean"]["value"]
    assert s["ce_recovered"]["value"] == pytest.approx(1.0, abs=1e-12)
    assert s["kl"]["value"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("exclude_bos, zero_all", [(False, True), (True, False)])
def test_zero_dictionary(model, tokens, exclude_bos, zero_all):
    """A zero dictionary is the zero ablation when both splice the same positions. (Default sae-lens
    convention with exclude_bos: the dictionary keeps BOS clean but the ablation zeroes it too.)"""
    s, _ = evaluate_recon(model, None, tokens, SITE, encode=lambda x: torch.zeros_like(x),
                          decode=lambda f: f, exclude_bos=exclude_bos, zero_all_positions=zero_all,
                          n_resamples=50)
    assert s["ce_dict"]["value"] == pytest.approx(s["ce_zero"]["value"], rel=1e-12)
    assert s["ce_recovered"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert s["l0"]["value"] == 0.0 and s["dead_frac"] == 1.0


def test_l0_dead_dense_constructed(model, tokens):
    """Codes by position p: latent 0 always on (dense), 1 on at p == 1 only (freq 1/15), 2 on at BOS only
    (dead when BOS is excluded), 3..9 never. L0(p) = 1 + [p == 1] + [p == 0]."""
    def encode(x):
        f = torch.zeros(*x.shape[:2], 10)
        f[:, :, 0] = 1.0
        f[:, 1, 1] = 2.0
        f[:, 0, 2] = -1.0  # negative codes count as firing (!= 0)
        return f

    dec = lambda f: torch.zeros(*f.shape[:2], D)  # noqa: E731
    s, per = evaluate_recon(model, None, tokens, SITE, encode=encode, decode=dec, n_resamples=50)
    assert s["l0"]["value"] == pytest.approx(1 + 1 / (T - 1)) and np.allclose(per["l0"], 1 + 1 / (T - 1))
    assert s["dead_frac"] == pytest.approx(0.8) and s["dense_frac"] == pytest.approx(0.1)
    h = s["firing_freq_hist"]
    assert h["counts"][-1] == 1 and sum(h["counts"]) == 2 and h["n_dead"] == 8
    assert h["counts"][int(np.digitize(np.log10(1 / (T - 1)), h["edges"])) - 1] == 1
    s2, _ = evaluate_recon(model, None, tokens, SITE, encode=encode, decode=dec, exclude_bos=False, n_resamples=50)
    assert s2["l0"]["value"] == pytest.approx(1 + 2 / T) and s2["dead_frac"] == pytest.approx(0.7)


def test_transcoder_path(model, tokens):
    hin, hout = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"
    mlp = model.blocks[1].mlp
    s, _ = evaluate_recon(model, None, tokens, hin, hout, encode=mlp, decode=lambda f: f, n_resamples=50)
    assert s["fvu"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert s["ce_recovered"]["value"] == pytest.approx(1.0, abs=1e-9)
    assert s["kl"]["value"] == pytest.approx(0.0, abs=1e-9)
    # FVU is against y = MLP output: y_hat = y / 2 gives FVU = sum||y||^2 / 4 / sum||y - mean y||^2.
    s2, _ = evaluate_recon(model, None, tokens, hin, hout, encode=mlp, decode=lambda f: f / 2, n_resamples=50)
    _, cache = model.run_with_cache(tokens, names_filter=[hout])
    y = cache[hout][:, 1:].reshape(-1, D).double()
    expect = (y ** 2).sum() / 4 / ((y - y.mean(0)) ** 2).sum()
    assert s2["fvu"]["value"] == pytest.approx(expect.item(), rel=1e-6)
    assert s2["ce_dict"]["value"] != pytest.approx(s2["ce_clean"]["value"], rel=1e-6)


@pytest.mark.parametrize("kwargs, name", [
    (dict(hook_in="blocks.9.nope"), "hook_in"),
    (dict(hook_out="nope"), "hook_out"),
    (dict(batch_size=0), "batch_size"),
    (dict(tokens=torch.zeros(5, dtype=torch.long)), "tokens"),
    (dict(encode=None), "dictionary"),
])
def test_bad_input_names_parameter(model, tokens, kwargs, name):
    args = dict(model=model, dictionary=None, tokens=tokens, hook_in=SITE, encode=lambda x: x,
                decode=lambda f: f) | kwargs
    with pytest.raises(ValueError, match=name):
        evaluate_recon(**args)
