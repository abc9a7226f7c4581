"""Percentile bootstrap over sequences (the unit of independence for token-level metrics)."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

# Cap on resample-index-matrix elements held at once (int64: 8 bytes each -> ~32 MB).
_CHUNK_ELEMS = 4_000_000


def bootstrap_ci(
    per_seq_num: np.ndarray | None,
    per_seq_den: np.ndarray | None = None,
    *,
    stat: Callable | None = None,
    n: int | None = None,
    vectorized: bool = False,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap CI, resampling sequence indices with replacement.

    Each resample b draws idx_b = n indices uniformly from {0..n-1} (numpy ``default_rng(seed)``) and
    evaluates the statistic on it; the CI is the (1-c)/2 and (1+c)/2 quantiles (linear interpolation)
    of the n_resamples values, c = ``confidence``. The point estimate is the statistic on the full sample.

    Statistic, by argument:
      * ``per_seq_num`` only:                 S(idx) = mean(num[idx])
      * ``per_seq_num`` and ``per_seq_den``:  S(idx) = sum(num[idx]) / sum(den[idx])   (ratio statistics,
        e.g. FVU = sum SSE / sum SST, or a token-weighted mean with den = tokens per sequence)
      * ``stat`` (with ``n`` = number of sequences, or ``per_seq_num`` to infer it): S(idx) = stat(idx);
        ``idx`` is a 1-D index array, or, when ``vectorized``, an [R, n] matrix and stat returns [R] values.

    Returns (point, lo, hi) as floats.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}")
    if stat is None:
        if per_seq_num is None:
            raise ValueError("per_seq_num is required when stat is not given")
        num = np.asarray(per_seq_num, dtype=np.float64)
        if num.ndim != 1 or num.size == 0:
            raise ValueError(f"per_seq_num must be a non-empty 1-D array, got shape {num.shape}")
        den = None
        if per_seq_den is not None:
            den = np.asarray(per_seq_den, dtype=np.float64)
            if den.shape != num.shape:
                raise ValueError(f"per_seq_den shape {den.shape} != per_seq_num shape {num.shape}")
        n = num.size
        vectorized = True

        def stat(idx):  # idx: [R, n]; row sums are the whole cost, so this is one gather + reduce
            s = num[idx].sum(axis=-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                return s / (den[idx].sum(axis=-1) if den is not None else idx.shape[-1])
    else:
        if n is None:
            if per_seq_num is None:
                raise ValueError("n (number of sequences) is required with stat when per_seq_num is None")
            n = len(per_seq_num)
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
    n = int(n)

    full = np.arange(n)
    point = float(np.asarray(stat(full[None, :]))[0]) if vectorized else float(stat(full))

    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMS // n)  # resamples per block: vectorised, memory-bounded
    vals = []
    for start in range(0, int(n_resamples), chunk):
        idx = rng.integers(0, n, size=(min(chunk, int(n_resamples) - start), n))
        if vectorized:
            vals.append(np.asarray(stat(idx), dtype=np.float64).reshape(-1))
        else:
            vals.append(np.array([stat(row) for row in idx], dtype=np.float64))
    vals = np.concatenate(vals)
    alpha = (1.0 - confidence) / 2.0
    # nanquantile: a degenerate resample (e.g. zero denominator) should not poison the interval.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN -> (nan, nan), no noise
        lo, hi = np.nanquantile(vals, [alpha, 1.0 - alpha])
    return point, float(lo), float(hi)
