"""Sparse feature-circuit faithfulness (seed 000, rows circuit-g2-sae and circuit-multilayer).

A labelled binary task (y = 1 positive), mean-pooled dictionary codes X_L [n, d_sae] per layer L
(saeflow.data.activations.pooled_features), train and test windows.

Attribution (from the train windows only, and independent of the probe that scores the circuit):
    s_L(i) = | mean(X_L[y == 1, i]) - mean(X_L[y == 0, i]) |
The circuit of size K at layer L is the K latents with the largest s_L (ties: smaller id).

Scores, each the test accuracy of the same probe (saeflow.evals.probe: L2 logistic regression, C = 1)
fit on the train windows restricted to a latent set:
    acc_circuit(L, K)   the circuit's latents
    acc_random(L, K)    ``n_random`` seeded draws of K latents uniformly among the latents that fire on
                        some train window (a dead latent would make the null trivially weak)
    acc_ceiling(L)      all latents
    faithfulness        acc_circuit / acc_ceiling
    gap                 acc_circuit - mean over draws of acc_random, with a paired bootstrap CI over test
                        windows (per window: the circuit's correctness minus the draws' mean correctness)
    null_quantile       fraction of random draws whose accuracy is below the circuit's (ties count half)
Multi-layer: the union of every layer's K-circuit (features concatenated) against the union of one random
K-set per layer (same draws) and the ceiling of all layers' latents; the build-up curve is the union over
the first j layers, j = 1..n_layers, in the given layer order (circuit-multilayer's curve).
"""

from __future__ import annotations

import numpy as np

from saeflow.evals import probe

SCOPES = ("layer", "union", "buildup")


def attribution(X_train, y_train) -> np.ndarray:
    """s(i) = |mean(X[y == 1, i]) - mean(X[y == 0, i])| over train rows (float64)."""
    X, y = probe._check_xy(X_train, y_train, "train")
    if not (y == 1).any() or not (y == 0).any():
        raise ValueError("y_train must contain both classes 0 and 1")
    return np.abs(X[y == 1].mean(0) - X[y == 0].mean(0))


def top_latents(scores, k: int) -> np.ndarray:
    """The k latents with the largest scores (ties: smaller id), ascending ids."""
    if not 1 <= k <= len(scores):
        raise ValueError(f"k must be in 1..{len(scores)} (latents); got {k}")
    return np.sort(np.argsort(-np.asarray(scores), kind="stable")[:k])


def random_sets(alive: np.ndarray, k: int, n: int, seed: int) -> list[np.ndarray]:
    """n seeded draws of k distinct latents among ``alive`` (ascending ids each)."""
    if k > len(alive):
        raise ValueError(f"k={k} is more than the {len(alive)} live latents")
    g = np.random.default_rng(seed)
    return [np.sort(g.choice(alive, k, replace=False)) for _ in range(n)]


def _correct(Xtr, ytr, Xte, yte, seed) -> np.ndarray:
    return probe.probe_accuracy(Xtr, ytr, Xte, yte, None, seed)[1]


def _row(scope, layers, k, c_circ, c_rand, c_all, n_resamples, seed) -> dict:
    acc_rand = c_rand.mean(1)                        # per draw
    acc_c, acc_all = float(c_circ.mean()), float(c_all.mean())
    gap, lo, hi = probe.paired_bootstrap_diff(c_circ, c_rand.mean(0), n_resamples=n_resamples, seed=seed)
    below = (acc_rand < acc_c).mean() + 0.5 * (acc_rand == acc_c).mean()
    return {"scope": scope, "layers": ",".join(map(str, layers)), "n_layers": len(layers), "k": int(k),
            "acc_circuit": acc_c, "acc_random": float(acc_rand.mean()),
            "acc_random_q05": float(np.quantile(acc_rand, 0.05)), "acc_random_q95": float(np.quantile(acc_rand, 0.95)),
            "acc_ceiling": acc_all, "faithfulness": acc_c / acc_all if acc_all > 0 else float("nan"),
            "gap": gap, "gap_lo": lo, "gap_hi": hi, "null_quantile": float(below),
            "n_random": int(c_rand.shape[0]), "n_train": 0, "n_test": int(c_circ.size)}


def circuit_faithfulness(X_train: dict, X_test: dict, y_train, y_test, ks, n_random: int = 20,
                         n_resamples: int = 1000, seed: int = 0):
    """Rows (scope, layers, n_layers, k, acc_circuit, acc_random, acc_random_q05/q95, acc_ceiling,
    faithfulness, gap, gap_lo, gap_hi, null_quantile, n_random, n_train, n_test) for every layer and K
    in ``ks`` (scope "layer"), the union of all layers (scope "union") and the build-up over the first
    j layers (scope "buildup", j = 1..n; j = n equals the union). X_train/X_test: {layer: [n, d_sae]},
    in the layer order of the build-up. Returns (DataFrame, {layer: {K: circuit latent ids}}).
    """
    import pandas as pd

    layers = list(X_train)
    y_tr, y_te = np.asarray(y_train), np.asarray(y_test)
    circuits, draws = {}, {}
    for li, L in enumerate(layers):
        s = attribution(X_train[L], y_tr)
        alive = np.flatnonzero((np.asarray(X_train[L]) > 0).any(0))
        for k in ks:
            if k > len(alive):
                raise ValueError(f"k={k} is more than the {len(alive)} latents of layer {L} that fire on a train "
                                 "window; lower circuit.ks")
        circuits[L] = {int(k): top_latents(s, k) for k in ks}
        draws[L] = {int(k): random_sets(alive, k, n_random, seed + 1000 * li + int(k)) for k in ks}
    rows = []

    def score(sets_per_layer, use):
        Xtr = np.concatenate([np.asarray(X_train[L])[:, sets_per_layer[L]] for L in use], 1)
        Xte = np.concatenate([np.asarray(X_test[L])[:, sets_per_layer[L]] for L in use], 1)
        return _correct(Xtr, y_tr, Xte, y_te, seed)

    full = {L: np.arange(np.asarray(X_train[L]).shape[1]) for L in layers}
    ceiling = {L: score(full, [L]) for L in layers}
    # the all-latents ceiling of each build-up prefix does not depend on K: fit once (one layer: as above)
    prefix_ceiling = {j: ceiling[layers[0]] if j == 1 else score(full, layers[:j]) for j in range(1, len(layers) + 1)}
    for k in ks:
        k = int(k)
        circ = {L: circuits[L][k] for L in layers}
        rand_c = {L: np.stack([score({L: d}, [L]) for d in draws[L][k]]) for L in layers}
        for L in layers:
            rows.append(_row("layer", [L], k, score(circ, [L]), rand_c[L], ceiling[L], n_resamples, seed))
        for j in range(1, len(layers) + 1):
            use = layers[:j]
            c_rand = np.stack([score({L: draws[L][k][r] for L in use}, use) for r in range(n_random)])
            row = _row("buildup", use, k, score(circ, use), c_rand, prefix_ceiling[j], n_resamples, seed)
            rows.append(row)
            if j == len(layers):
                rows.append({**row, "scope": "union"})
    df = pd.DataFrame(rows).assign(n_train=len(y_tr))
    return df, {L: {k: v.tolist() for k, v in c.items()} for L, c in circuits.items()}
