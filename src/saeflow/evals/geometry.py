"""Decoder geometry vs entropy: do latents with near-parallel decoder rows have similar H?

For the latents with an entropy estimate H (e.g. H_pos), let u_i = W_dec[f_i] / ||W_dec[f_i]||_2 be the
L2-normalised decoder row. For every unordered pair i < j:

    cos_ij   = <u_i, u_j>
    abs_dH_ij = |H_i - H_j|

and the summary correlates cos against abs_dH over the n(n-1)/2 pairs (Spearman rho and Pearson r, with
scipy's asymptotic p-values). A negative rho means "geometrically close latents have similar entropy".

Because pairs share latents they are not independent, so the scipy p-values are optimistic; the
permutation null is the honest check: shuffle H over latents (a seeded ``numpy.random.Generator``),
recompute abs_dH for every pair and the two correlations against the fixed cos, n_permutations times.
Two-sided permutation p:

    p_perm = (1 + #{b : |rho_null_b| >= |rho_obs|}) / (1 + n_permutations)

Latents whose H is NaN (no estimate) are dropped before anything is computed; their ids are reported in
``summary["dropped_nan_features"]``. At least 3 latents must remain.

No Snakemake import here; scipy / matplotlib are imported inside functions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

QUANTILES = (0.025, 0.5, 0.975)


_BATCH = 128  # permutations per vectorised batch


def _features(features, name: str = "features") -> np.ndarray:
    f = np.asarray(features)
    if f.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {f.shape}")
    if f.size and not np.issubdtype(f.dtype, np.integer):
        if not np.all(np.equal(np.mod(f, 1), 0)):
            raise ValueError(f"{name} must be integer latent ids")
        f = f.astype(np.int64)
    if len(np.unique(f)) != len(f):
        raise ValueError(f"{name} contains duplicate latent ids")
    return f.astype(np.int64)


def decoder_cosines(W_dec: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Cosine matrix of the decoder rows of ``features``.

    u_i = W_dec[f_i] / ||W_dec[f_i]||_2 ;  C = U U^T  (shape [n, n], diagonal 1, clipped to [-1, 1]).
    W_dec is [d_sae, d_model]. A zero decoder row has no direction -> ValueError.
    """
    W = np.asarray(W_dec)
    if W.ndim != 2:
        raise ValueError(f"W_dec must be 2-D [d_sae, d], got shape {W.shape}")
    f = _features(features)
    if f.size and (f.min() < 0 or f.max() >= W.shape[0]):
        raise ValueError(f"features must index rows of W_dec (0..{W.shape[0] - 1})")
    U = W[f].astype(np.float64)
    norms = np.linalg.norm(U, axis=1)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("W_dec has a zero or non-finite decoder row for a requested feature")
    U /= norms[:, None]
    C = np.clip(U @ U.T, -1.0, 1.0)
    np.fill_diagonal(C, 1.0)
    return C


def pairwise_table(features, H: np.ndarray, cos: np.ndarray) -> pd.DataFrame:
    """One row per unordered pair i < j (upper triangle, row-major):
    feature_a = f_i, feature_b = f_j, cos = cos[i, j], abs_dH = |H_i - H_j|."""
    f = _features(features)
    H = np.asarray(H, dtype=np.float64)
    cos = np.asarray(cos, dtype=np.float64)
    n = len(f)
    if H.shape != (n,):
        raise ValueError(f"H must have shape ({n},) matching features, got {H.shape}")
    if cos.shape != (n, n):
        raise ValueError(f"cos must have shape ({n}, {n}), got {cos.shape}")
    i, j = np.triu_indices(n, k=1)
    return pd.DataFrame({"feature_a": f[i], "feature_b": f[j], "cos": cos[i, j],
                         "abs_dH": np.abs(H[i] - H[j])})


def _rowwise_corr(Y: np.ndarray, x_centred_unit: np.ndarray) -> np.ndarray:
    """Pearson r of each row of Y [B, m] with a fixed vector already centred and scaled to unit norm."""
    Yc = Y - Y.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(Yc, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (Yc @ x_centred_unit) / norm


def _unit_centred(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean()
    nrm = np.linalg.norm(xc)
    return xc / nrm if nrm > 0 else np.full_like(xc, np.nan)


def geometry_vs_entropy(W_dec, features, H, n_permutations: int = 1000, seed: int = 0
                        ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per-feature neighbour table, pairwise table and correlation summary (see module docstring).

    per_feature: feature_id, H, nearest_neighbour (id maximising cos_ij, j != i), nearest_cos,
    mean_abs_cos = mean_{j != i} |cos_ij|.

    summary: n_features, n_pairs, spearman {rho, p}, pearson {r, p} (scipy), null {spearman_quantiles,
    pearson_quantiles (keys "0.025", "0.5", "0.975"), p_perm_spearman, p_perm_pearson, n_permutations,
    seed, spearman_samples (the null rho values, for the figure)}, correlation_decoder_cos_vs_abs_dH_pos
    (= spearman rho, seed-card name), null_distribution_quantiles (= null spearman quantiles),
    dropped_nan_features.

    Null: b-th permutation pi_b of the latents (Generator(seed).permutation, drawn in order), abs_dH^b_ij =
    |H_{pi_b(i)} - H_{pi_b(j)}|. Spearman = Pearson of average ranks. Both rank transforms are done once:
    cos is fixed, and the permuted |dH| of pair (i, j) is the original |dH| of pair (pi(i), pi(j)), so its
    rank is a gather from the [n, n] rank matrix of the original |dH| (exact, ties included). Permutations
    are processed in batches of matrix ops.
    """
    from scipy import stats

    f = _features(features)
    H = np.asarray(H, dtype=np.float64)
    if H.shape != f.shape:
        raise ValueError(f"H must have shape {f.shape} matching features, got {H.shape}")
    if not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
        raise ValueError(f"n_permutations must be a positive integer, got {n_permutations!r}")
    keep = ~np.isnan(H)
    dropped = [int(x) for x in f[~keep]]
    f, H = f[keep], H[keep]
    n = len(f)
    if n < 3:
        raise ValueError(f"features: need >= 3 latents with finite H, got {n}")
    if not np.all(np.isfinite(H)):
        raise ValueError("H must be finite or NaN (infinite values found)")
    if np.ptp(H) == 0:
        raise ValueError("H is constant over the features; |dH| correlation is undefined")

    C = decoder_cosines(W_dec, f)
    pw = pairwise_table(f, H, C)

    off = C.copy()
    np.fill_diagonal(off, -np.inf)
    nn = off.argmax(axis=1)
    absC = np.abs(C)
    np.fill_diagonal(absC, 0.0)
    per = pd.DataFrame({"feature_id": f, "H": H, "nearest_neighbour": f[nn],
                        "nearest_cos": C[np.arange(n), nn], "mean_abs_cos": absC.sum(axis=1) / (n - 1)})

    c = pw["cos"].to_numpy()
    d = pw["abs_dH"].to_numpy()
    rho, p_s = stats.spearmanr(c, d)
    r, p_p = stats.pearsonr(c, d)

    # permutation null
    iu, ju = np.triu_indices(n, k=1)
    c_unit = _unit_centred(c)
    rc_unit = _unit_centred(stats.rankdata(c))
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(n) for _ in range(n_permutations)])  # [B, n]
    null_s = np.empty(n_permutations)
    null_p = np.empty(n_permutations)
    # The multiset of |dH| values is permutation-invariant: pair (i, j) under pi carries the value of
    # original pair (pi(i), pi(j)), so its average rank is R[pi(i), pi(j)] with R ranked once (ties exact).
    Dm = np.abs(H[:, None] - H[None, :])
    R = np.zeros((n, n))
    R[iu, ju] = stats.rankdata(Dm[iu, ju])
    R = R + R.T
    for s in range(0, n_permutations, _BATCH):
        P = perms[s:s + _BATCH]                           # [b, n]
        a, b = P[:, iu], P[:, ju]                         # [b, m]
        null_p[s:s + _BATCH] = _rowwise_corr(Dm[a, b], c_unit)
        null_s[s:s + _BATCH] = _rowwise_corr(R[a, b], rc_unit)

    def _q(v):
        return {str(q): float(np.nanquantile(v, q)) for q in QUANTILES}

    def _pperm(v, obs):
        return float((1 + np.sum(np.abs(v) >= abs(obs) - 1e-12)) / (1 + len(v)))

    sq = _q(null_s)
    summary = {
        "n_features": int(n),
        "n_pairs": int(len(pw)),
        "spearman": {"rho": float(rho), "p": float(p_s)},
        "pearson": {"r": float(r), "p": float(p_p)},
        "null": {
            "n_permutations": int(n_permutations), "seed": int(seed),
            "spearman_quantiles": sq, "pearson_quantiles": _q(null_p),
            "p_perm_spearman": _pperm(null_s, rho), "p_perm_pearson": _pperm(null_p, r),
            "spearman_samples": [float(x) for x in null_s],
        },
        "correlation_decoder_cos_vs_abs_dH_pos": float(rho),
        "null_distribution_quantiles": dict(sq),
        "dropped_nan_features": dropped,
    }
    return per, pw, summary
