"""Tests for saeflow.evals.bootstrap.bootstrap_ci (percentile bootstrap over sequences)."""

import numpy as np
import pytest
from scipy import stats

from saeflow.evals.bootstrap import bootstrap_ci


def test_mean_matches_scipy_percentile():
    data = np.random.default_rng(1).normal(size=200)
    point, lo, hi = bootstrap_ci(data, n_resamples=20000, seed=3)
    ref = stats.bootstrap((data,), np.mean, n_resamples=20000, method="percentile",
                          confidence_level=0.95, random_state=7).confidence_interval
    assert point == pytest.approx(data.mean(), abs=1e-12)
    # Different resample streams: agreement is up to Monte-Carlo error (~1e-3 here).
    assert lo == pytest.approx(ref.low, abs=1e-2)
    assert hi == pytest.approx(ref.high, abs=1e-2)


def test_constant_data_zero_width():
    assert bootstrap_ci(np.full(30, 2.5)) == pytest.approx((2.5, 2.5, 2.5), abs=1e-12)
    den = np.random.default_rng(0).integers(1, 9, size=40).astype(float)
    assert bootstrap_ci(3.0 * den, den) == pytest.approx((3.0, 3.0, 3.0), abs=1e-12)


def test_ratio_equals_stat_forms_and_is_seeded():
    rng = np.random.default_rng(2)
    num, den = rng.gamma(2.0, size=50), rng.gamma(3.0, size=50)
    ratio = bootstrap_ci(num, den, n_resamples=300, seed=5)
    loop = bootstrap_ci(None, stat=lambda i: num[i].sum() / den[i].sum(), n=50, n_resamples=300, seed=5)
    vec = bootstrap_ci(None, stat=lambda i: num[i].sum(-1) / den[i].sum(-1), n=50, vectorized=True,
                       n_resamples=300, seed=5)
    assert ratio[0] == pytest.approx(num.sum() / den.sum(), rel=1e-12)
    np.testing.assert_allclose(ratio, loop, rtol=1e-12)
    np.testing.assert_allclose(ratio, vec, rtol=1e-12)
    assert bootstrap_ci(num, den, seed=5) == bootstrap_ci(num, den, seed=5)
    assert bootstrap_ci(num, den, seed=5) != bootstrap_ci(num, den, seed=6)


def test_coverage_simulation():
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(200):
        _, lo, hi = bootstrap_ci(rng.normal(1.0, 2.0, size=60), n_resamples=400, seed=int(rng.integers(1 << 30)))
        hits += lo <= 1.0 <= hi
    assert 0.88 <= hits / 200 <= 0.99  # nominal 0.95; percentile bootstrap under-covers slightly at n=60


@pytest.mark.parametrize("kwargs, name", [
    (dict(per_seq_num=np.ones(5), confidence=1.0), "confidence"),
    (dict(per_seq_num=np.ones(5), n_resamples=0), "n_resamples"),
    (dict(per_seq_num=np.ones(5), per_seq_den=np.ones(4)), "per_seq_den"),
    (dict(per_seq_num=np.ones((2, 2))), "per_seq_num"),
    (dict(per_seq_num=None), "per_seq_num"),
    (dict(per_seq_num=None, stat=lambda i: 0.0), "n"),
])
def test_bad_input_names_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        bootstrap_ci(**kwargs)
