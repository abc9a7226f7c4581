"""Tests for saeflow.evals.compare: the paired bootstrap against a slow loop, verdict rules, and planted
head-to-heads on a real recon (a dictionary with a planted error against the exact one)."""

import numpy as np
import pytest
import torch

from saeflow.evals import compare, probe
from saeflow.evals.recon import evaluate_recon


def slow_paired(na, da, nb, db, n_resamples, seed, confidence=0.95):
    """The paired ratio-difference bootstrap written as a loop over resamples (same index stream)."""
    rng = np.random.default_rng(seed)
    n = len(na)
    vals = []
    for _ in range(n_resamples):
        i = rng.integers(0, n, size=(1, n))[0]
        vals.append(na[i].sum() / da[i].sum() - nb[i].sum() / db[i].sum())
    a = (1 - confidence) / 2
    return na.sum() / da.sum() - nb.sum() / db.sum(), *np.quantile(vals, [a, 1 - a])


def test_paired_ratio_diff_matches_slow_loop():
    g = np.random.default_rng(3)
    na, nb = g.gamma(2.0, size=40), g.gamma(2.2, size=40)
    da, db = g.uniform(5, 6, size=40), g.uniform(5, 6, size=40)
    sa, sb, d, lo, hi = compare.paired_ratio_diff(na, da, nb, db, n_resamples=300, seed=7)
    assert sa == pytest.approx(na.sum() / da.sum()) and sb == pytest.approx(nb.sum() / db.sum())
    np.testing.assert_allclose([d, lo, hi], slow_paired(na, da, nb, db, 300, 7), rtol=1e-12)


def test_accuracy_difference_equals_the_probe_paired_bootstrap():
    g = np.random.default_rng(0)
    a, b = g.random(200) < 0.8, g.random(200) < 0.6
    row = compare.compare_correct(a, b, "probe_acc@1", "probe", "1", n_resamples=500, seed=2)
    ref = probe.paired_bootstrap_diff(a, b, n_resamples=500, seed=2)
    np.testing.assert_allclose([row["diff"], row["diff_lo"], row["diff_hi"]], ref, atol=1e-12)
    assert row["value_a"] == pytest.approx(a.mean()) and row["verdict"] == "A better"
    assert compare.compare_correct(b, a, "probe_acc@1", "probe", "1", n_resamples=500)["verdict"] == "B better"


@pytest.mark.parametrize("lo,hi,higher,expected", [
    (0.1, 0.3, True, "A better"), (0.1, 0.3, False, "B better"), (-0.3, -0.1, True, "B better"),
    (-0.3, -0.1, False, "A better"), (-0.1, 0.1, True, "no difference"), (0.0, 0.2, True, "no difference")])
def test_verdict_rule(lo, hi, higher, expected):
    assert compare.verdict(lo, hi, higher) == expected


def test_verdict_refuses_nan():
    with pytest.raises(ValueError, match="finite"):
        compare.verdict(float("nan"), 0.1, True)


@pytest.fixture(scope="module")
def recon_tables():
    """per_seq tables of one model's mlp_out site for the exact dictionary (identity) and one with a planted
    error (the identity plus seeded noise in the decoder), on the same windows."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=16, d_head=4, n_heads=4, d_mlp=32, d_vocab=48, n_ctx=16,
                                  act_fn="gelu", normalization_type="LN", seed=0)
    model = HookedTransformer(cfg).eval()
    tok = torch.randint(1, 48, (32, 12), generator=torch.Generator().manual_seed(0))
    tok[:, 0] = 0
    noise = 0.6 * torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
    site = "blocks.0.hook_mlp_out"

    def run(dec):
        return evaluate_recon(model, None, tok, site, encode=lambda x: x, decode=dec, n_resamples=200)

    exact_s, exact = run(lambda f: f)
    noisy_s, noisy = run(lambda f: f + f @ noise)
    return exact_s, exact, noisy_s, noisy


def test_planted_error_loses_every_recon_headline(recon_tables):
    exact_s, exact, noisy_s, noisy = recon_tables
    rows = {r["metric"]: r for r in compare.compare_recon(exact, noisy, same_site=True, n_resamples=500)}
    # on this random model zero-ablating mlp_out lowers the loss, so CE recovered is undefined and left out
    assert np.sum(exact["ce_zero"] - exact["ce_clean"]) <= 0
    assert set(rows) == set(compare.RECON_METRICS) - {"ce_recovered"}
    # ce_increase is not asserted: on a random model a perturbed splice may as well lower the loss
    for m in ("fvu", "kl"):
        assert rows[m]["verdict"] == "A better", (m, rows[m])
    for r in rows.values():
        assert r["diff_lo"] <= r["diff"] <= r["diff_hi"]
        assert r["verdict"] == compare.verdict(r["diff_lo"], r["diff_hi"], r["higher_is_better"])
    assert rows["ce_increase"]["value_a"] == pytest.approx(0.0, abs=1e-9)
    # the values are the recon node's own headlines
    for m in ("fvu", "kl"):
        assert rows[m]["value_a"] == pytest.approx(exact_s[m]["value"], abs=1e-9)
        assert rows[m]["value_b"] == pytest.approx(noisy_s[m]["value"], rel=1e-9)
    assert rows["ce_increase"]["value_b"] == pytest.approx(noisy_s["ce_dict"]["value"] - noisy_s["ce_clean"]["value"],
                                                           rel=1e-9)
    assert rows["fvu"]["value_a"] == pytest.approx(0.0, abs=1e-9)


def test_a_dictionary_against_itself_is_no_difference(recon_tables):
    _, _, _, noisy = recon_tables
    for r in compare.compare_recon(noisy, noisy, same_site=True, n_resamples=200):
        assert (r["diff"], r["diff_lo"], r["diff_hi"]) == (0.0, 0.0, 0.0)
        assert r["verdict"] == "no difference"


def test_site_bound_metrics_left_out_across_sites(recon_tables):
    _, exact, _, noisy = recon_tables
    assert {r["metric"] for r in compare.compare_recon(exact, noisy, same_site=False, n_resamples=50)} == \
        {"ce_increase", "kl"}


def test_ce_recovered_of_a_closer_splice_wins():
    n = 20
    base = {"seq_idx": np.arange(n), "n_tokens": np.full(n, 10), "n_pred_tokens": np.full(n, 9),
            "sse": np.ones(n), "sst": np.full(n, 4.0), "kl": np.full(n, 0.1), "ce_clean": np.full(n, 1.0),
            "ce_zero": np.full(n, 3.0)}
    g = np.random.default_rng(0)
    a = {**base, "ce_dict": 1.2 + 0.05 * g.random(n)}
    b = {**base, "ce_dict": 1.8 + 0.05 * g.random(n)}
    r = {x["metric"]: x for x in compare.compare_recon(a, b, same_site=True, n_resamples=200)}["ce_recovered"]
    assert r["value_a"] == pytest.approx(1 - (a["ce_dict"].mean() - 1) / 2)
    assert r["value_b"] == pytest.approx(1 - (b["ce_dict"].mean() - 1) / 2) and r["verdict"] == "A better"


def test_ce_recovered_left_out_where_zero_ablation_does_not_raise_the_loss(recon_tables):
    _, exact, _, noisy = recon_tables
    flipped = {**noisy, "ce_zero": np.asarray(noisy["ce_clean"]) - 0.1}  # zero ablation better than clean
    assert "ce_recovered" not in {r["metric"] for r in compare.compare_recon(exact, flipped, same_site=True,
                                                                              n_resamples=50)}


def test_different_windows_refused(recon_tables):
    _, exact, _, noisy = recon_tables
    short = {k: np.asarray(v)[:-1] for k, v in noisy.items()}
    with pytest.raises(ValueError, match="different windows"):
        compare.compare_recon(exact, short, same_site=True)


def test_sparse_probing_returns_the_correctness_it_scores():
    g = np.random.default_rng(0)
    y_tr, y_te = g.integers(0, 2, 80), g.integers(0, 2, 40)
    X_tr, X_te = g.random((80, 12)) + y_tr[:, None] * 0.3, g.random((40, 12)) + y_te[:, None] * 0.3
    df, correct = probe.sparse_probing(X_tr, X_te, X_tr[:, :4], X_te[:, :4], y_tr, y_te, ks=(1, 2),
                                       n_resamples=50, return_correct=True)
    assert list(correct) == list(df["k"]) == ["1", "2", "all"]
    for r in df.itertuples():
        assert correct[r.k][0].mean() == pytest.approx(r.acc_sae) and correct[r.k][1].mean() == pytest.approx(r.acc_raw)


def test_unpaired_means_ci_matches_the_normal_closed_form():
    g = np.random.default_rng(4)
    a, b = g.normal(1.0, 1.0, 400), g.normal(0.8, 2.0, 300)
    row = compare.compare_unpaired_means(a, b, "mean_H_pos@ctx32", "h_pos", "32", n_resamples=2000, seed=1)
    assert row["diff"] == pytest.approx(a.mean() - b.mean()) and row["paired"] is False
    se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert row["diff_hi"] - row["diff_lo"] == pytest.approx(2 * 1.959964 * se, rel=0.1)
    assert row["diff_lo"] < row["diff"] < row["diff_hi"]
    # no better direction: the verdict says which is higher
    assert row["verdict"] == compare.verdict(row["diff_lo"], row["diff_hi"], None)
    assert compare.verdict(0.1, 0.2, None) == "A higher" and compare.verdict(-0.2, -0.1, None) == "B higher"
