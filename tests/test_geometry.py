import time

import numpy as np
import pytest
from scipy import stats

from saeflow.evals.geometry import decoder_cosines, geometry_vs_entropy, pairwise_table
from saeflow.report.eval_figures import geometry_figure


def _random(n=60, d=32, d_sae=200, seed=1):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d_sae, d))
    feats = rng.choice(d_sae, size=n, replace=False)
    H = rng.uniform(0, 5, size=n)
    return W, feats, H


def _planted(n=60, d=64, seed=2):
    # decoder row of latent i = base direction rotating with H: similar H -> near-parallel rows
    rng = np.random.default_rng(seed)
    H = np.sort(rng.uniform(0, 3, size=n))
    a, b = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
    W = np.cos(H)[:, None] * a + np.sin(H)[:, None] * b + 0.05 * rng.normal(size=(n, d))
    return W, np.arange(n), H


def test_cosines_direct():
    W, f, _ = _random()
    C = decoder_cosines(W, f)
    U = W[f] / np.linalg.norm(W[f], axis=1, keepdims=True)
    np.testing.assert_allclose(C, U @ U.T, atol=1e-12)
    with pytest.raises(ValueError, match="W_dec"):
        decoder_cosines(W[0], f)


def test_pairwise_and_scipy_agree():
    W, f, H = _random()
    per, pw, s = geometry_vs_entropy(W, f, H, n_permutations=200)
    assert len(pw) == s["n_pairs"] == 60 * 59 // 2 and s["n_features"] == 60
    pw2 = pairwise_table(f, H, decoder_cosines(W, f))
    np.testing.assert_allclose(pw2["cos"], pw["cos"])
    assert (pw["feature_a"] != pw["feature_b"]).all()
    rho, p = stats.spearmanr(pw["cos"], pw["abs_dH"])
    r, pp = stats.pearsonr(pw["cos"], pw["abs_dH"])
    assert s["spearman"]["rho"] == pytest.approx(rho) and s["spearman"]["p"] == pytest.approx(p)
    assert s["pearson"]["r"] == pytest.approx(r) and s["pearson"]["p"] == pytest.approx(pp)
    assert s["correlation_decoder_cos_vs_abs_dH_pos"] == pytest.approx(rho)
    assert s["null_distribution_quantiles"] == s["null"]["spearman_quantiles"]
    # per-feature nearest neighbour matches brute force
    C = decoder_cosines(W, f)
    np.fill_diagonal(C, -2)
    assert (per["nearest_neighbour"].to_numpy() == f[C.argmax(1)]).all()
    # null samples match a slow scipy recomputation for the first permutations
    rng = np.random.default_rng(0)
    for b in range(3):
        Hp = H[rng.permutation(len(H))]
        pwb = pairwise_table(f, Hp, decoder_cosines(W, f))
        assert s["null"]["spearman_samples"][b] == pytest.approx(
            stats.spearmanr(pwb["cos"], pwb["abs_dH"])[0], abs=1e-10)


def test_null_exact_with_ties():
    W, f, H = _random(n=25)
    H = np.round(H)  # many tied |dH|: gathered ranks must still equal scipy's average ranks
    _, _, s = geometry_vs_entropy(W, f, H, n_permutations=20, seed=4)
    rng = np.random.default_rng(4)
    C = decoder_cosines(W, f)
    for b in range(20):
        pwb = pairwise_table(f, H[rng.permutation(len(H))], C)
        assert s["null"]["spearman_samples"][b] == pytest.approx(
            stats.spearmanr(pwb["cos"], pwb["abs_dH"])[0], abs=1e-10)


def test_planted_negative():
    W, f, H = _planted()
    _, _, s = geometry_vs_entropy(W, f, H, n_permutations=1000, seed=0)
    assert s["spearman"]["rho"] < -0.5
    assert s["null"]["p_perm_spearman"] < 0.01
    assert s["null"]["spearman_quantiles"]["0.025"] > s["spearman"]["rho"]


def test_random_not_significant_and_deterministic():
    W, f, H = _random(seed=3)
    _, _, s1 = geometry_vs_entropy(W, f, H, n_permutations=500, seed=7)
    _, _, s2 = geometry_vs_entropy(W, f, H, n_permutations=500, seed=7)
    _, _, s3 = geometry_vs_entropy(W, f, H, n_permutations=500, seed=8)
    assert s1["null"]["p_perm_spearman"] > 0.05
    assert s1["null"] == s2["null"]
    assert s1["null"]["spearman_samples"] != s3["null"]["spearman_samples"]


def test_speed():
    W, f, H = _random(n=100, d=64, d_sae=1000)
    t = time.perf_counter()
    geometry_vs_entropy(W, f, H, n_permutations=1000)
    assert time.perf_counter() - t < 1.5  # ~0.15 s typical; loose bound for loaded CI


def test_nan_dropped_and_min_features():
    W, f, H = _random(n=10)
    H = H.copy()
    H[[2, 5]] = np.nan
    per, pw, s = geometry_vs_entropy(W, f, H, n_permutations=50)
    assert s["n_features"] == 8 and s["n_pairs"] == 28
    assert set(s["dropped_nan_features"]) == {int(f[2]), int(f[5])}
    assert not set(per["feature_id"]) & {f[2], f[5]}
    H2 = np.full(10, np.nan)
    H2[:2] = [1.0, 2.0]
    with pytest.raises(ValueError, match="features"):
        geometry_vs_entropy(W, f, H2)
    with pytest.raises(ValueError, match="n_permutations"):
        geometry_vs_entropy(W, f, H, n_permutations=0)


@pytest.mark.parametrize("n", [40, 120])  # 780 pairs -> scatter, 7140 pairs -> hexbin
def test_figure(tmp_path, n):
    W, f, H = _planted(n=n)
    _, pw, s = geometry_vs_entropy(W, f, H, n_permutations=300)
    out = tmp_path / f"geom{n}.png"
    geometry_figure(pw, s, out, title="planted")
    assert out.stat().st_size > 10_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
