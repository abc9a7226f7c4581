"""saeflow.evals.circuit on planted ground truth: latents 0-4 of layer 0 (and 10-12 of layer 1) carry the
label, the rest are sparse noise. The attribution finds exactly them, the circuit's probe equals an
independent sklearn fit on those columns, its gap over same-size random sets has a CI above zero and the
null quantile is 1; with shuffled labels (the control) the gap's CI covers zero."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from saeflow.evals import circuit

N_TR, N_TE, D = 300, 200, 64
SIGNAL = {0: [0, 1, 2, 3, 4], 1: [10, 11, 12]}


def _codes(n, y, seed, layer):
    g = np.random.default_rng(seed + 10 * layer)
    X = g.exponential(0.3, size=(n, D)) * (g.random((n, D)) < 0.3)      # sparse nonnegative noise
    X[:, 40:] = 0.0                                                       # dead latents
    for i in SIGNAL[layer]:
        X[:, i] = np.maximum(0, 0.6 * y + 0.5 * g.standard_normal(n))      # fires more on positives
    return X


@pytest.fixture(scope="module")
def data():
    g = np.random.default_rng(0)
    y_tr, y_te = g.integers(0, 2, N_TR), g.integers(0, 2, N_TE)
    Xtr = {L: _codes(N_TR, y_tr, 1, L) for L in (0, 1)}
    Xte = {L: _codes(N_TE, y_te, 2, L) for L in (0, 1)}
    return Xtr, Xte, y_tr, y_te


def test_attribution_is_the_class_mean_difference_and_finds_the_planted_latents(data):
    Xtr, _, y, _ = data
    s = circuit.attribution(Xtr[0], y)
    np.testing.assert_allclose(s, np.abs(Xtr[0][y == 1].mean(0) - Xtr[0][y == 0].mean(0)))
    assert circuit.top_latents(s, 5).tolist() == SIGNAL[0]
    assert circuit.top_latents(np.array([1.0, 3.0, 3.0, 2.0]), 2).tolist() == [1, 2]  # ties: smaller id


def test_circuit_beats_random_sets_and_matches_sklearn(data):
    Xtr, Xte, ytr, yte = data
    df, circuits = circuit.circuit_faithfulness(Xtr, Xte, ytr, yte, ks=[3, 5], n_random=20, n_resamples=500)
    assert circuits[0][5] == SIGNAL[0] and circuits[1][3] == SIGNAL[1]
    row = df[(df["scope"] == "layer") & (df["layers"] == "0") & (df["k"] == 5)].iloc[0]
    cols = SIGNAL[0]
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(Xtr[0][:, cols], ytr).score(Xte[0][:, cols], yte)
    assert row["acc_circuit"] == pytest.approx(ref, abs=1 / N_TE)   # an independent fit of the same probe
    assert row["gap_lo"] > 0.05 and row["null_quantile"] == 1.0 and row["faithfulness"] > 0.9
    assert row["acc_random_q95"] < row["acc_circuit"] <= 1.0
    assert (df["n_test"] == N_TE).all() and (df["n_train"] == N_TR).all()
    assert sorted(set(df["scope"])) == ["buildup", "layer", "union"]
    union = df[(df["scope"] == "union") & (df["k"] == 5)].iloc[0]
    build = df[(df["scope"] == "buildup") & (df["k"] == 5)].sort_values("n_layers")
    assert build["layers"].tolist() == ["0", "0,1"] and union["layers"] == "0,1"
    assert union["acc_circuit"] == build.iloc[-1]["acc_circuit"] and union["gap_lo"] > 0


def test_shuffled_labels_give_a_gap_around_zero(data):
    Xtr, Xte, ytr, yte = data
    g = np.random.default_rng(5)
    df, _ = circuit.circuit_faithfulness(Xtr, Xte, g.permutation(ytr), g.permutation(yte), ks=[5], n_random=20,
                                         n_resamples=500)
    for row in df[df["scope"] == "layer"].itertuples():
        assert row.gap_lo <= 0 <= row.gap_hi, row


def test_k_above_the_live_latents_is_refused(data):
    Xtr, Xte, ytr, yte = data
    with pytest.raises(ValueError, match="k=41 is more than the 40 latents of layer 0"):
        circuit.circuit_faithfulness(Xtr, Xte, ytr, yte, ks=[41], n_random=2)
