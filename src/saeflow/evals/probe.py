"""Sparse probing (as SAEBench): mean-pooled activations, top-k dimensions by class-mean difference,
L2 logistic regression, test accuracy for SAE latents vs raw activations with a paired bootstrap CI."""

from __future__ import annotations

import numpy as np

from saeflow.evals.bootstrap import bootstrap_ci
from saeflow.tensors import to_numpy


def mean_pool(acts, mask=None) -> np.ndarray:
    """Per-sequence mean over included positions: out[i] = sum_t m[i,t] acts[i,t] / sum_t m[i,t].

    acts [n_seq, T, d] (numpy or torch); mask [n_seq, T] bool, True = include. Default mask: every position
    but t = 0 (BOS excluded). Accumulated in float64; returns [n_seq, d] float64. A sequence with no
    included position raises ValueError.
    """
    a = to_numpy(acts)
    if a.ndim != 3:
        raise ValueError(f"acts must have shape [n_seq, T, d], got {a.shape}")
    n, T, _ = a.shape
    if mask is None:
        m = np.ones((n, T), dtype=bool)
        m[:, 0] = False
    else:
        m = to_numpy(mask).astype(bool)
        if m.shape != (n, T):
            raise ValueError(f"mask must have shape {(n, T)} (n_seq, T), got {m.shape}")
    counts = m.sum(axis=1)
    if np.any(counts == 0):
        raise ValueError(f"mask: sequences {np.flatnonzero(counts == 0)[:10].tolist()} have no included position")
    s = np.einsum("ntd,nt->nd", a.astype(np.float64, copy=False), m.astype(np.float64))
    return s / counts[:, None]


def _check_xy(X, y, name: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(to_numpy(X), dtype=np.float64)
    y = np.asarray(to_numpy(y)).astype(np.int64)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X_{name}/y_{name} must be [n, d] and [n], got {X.shape} and {y.shape}")
    if not np.isin(y, [0, 1]).all():
        raise ValueError(f"y_{name} must be binary, allowed values 0 and 1")
    return X, y


def select_top_k(X_train, y_train, k) -> np.ndarray:
    """Indices of the k dims with largest |mean(X[y==1], axis 0) - mean(X[y==0], axis 0)|.

    Order: by decreasing score, ties broken by smaller index (stable sort). 1 <= k <= d else ValueError.
    """
    X, y = _check_xy(X_train, y_train, "train")
    d = X.shape[1]
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= d:
        raise ValueError(f"k must be an int in [1, {d}] (number of dims), got {k!r}")
    if not (y == 1).any() or not (y == 0).any():
        raise ValueError("y_train must contain both classes 0 and 1")
    score = np.abs(X[y == 1].mean(axis=0) - X[y == 0].mean(axis=0))
    return np.argsort(-score, kind="stable")[: int(k)]


def probe_accuracy(X_train, y_train, X_test, y_test, k: int | None, seed: int = 0) -> tuple[float, np.ndarray]:
    """Test accuracy of LogisticRegression(L2, C=1, max_iter=1000, random_state=seed) fit on the top-k dims
    (select_top_k on train; k None = all dims). accuracy = mean_i [pred_i == y_i]; returns
    (accuracy, correct [n_test] bool)."""
    from sklearn.linear_model import LogisticRegression

    Xtr, ytr = _check_xy(X_train, y_train, "train")
    Xte, yte = _check_xy(X_test, y_test, "test")
    if Xte.shape[1] != Xtr.shape[1]:
        raise ValueError(f"X_test has {Xte.shape[1]} dims, X_train {Xtr.shape[1]}")
    if k is None:
        cols = np.arange(Xtr.shape[1])
    else:
        cols = select_top_k(Xtr, ytr, k)
    # l1_ratio=0.0 is pure L2 (sklearn >= 1.8 spelling of penalty="l2").
    clf = LogisticRegression(C=1.0, l1_ratio=0.0, max_iter=1000, random_state=seed)
    clf.fit(Xtr[:, cols], ytr)
    correct = clf.predict(Xte[:, cols]) == yte
    return float(correct.mean()), correct


def paired_bootstrap_diff(correct_a, correct_b, n_resamples=1000, confidence=0.95, seed=0) -> tuple[float, float, float]:
    """Paired percentile bootstrap of mean(a) - mean(b) over test examples.

    Resample b draws n indices idx_b with replacement (numpy default_rng(seed), as saeflow.evals.bootstrap);
    D_b = mean(a[idx_b]) - mean(b[idx_b]) = mean((a - b)[idx_b]). Returns (D_full, q_(1-c)/2, q_(1+c)/2).
    """
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"correct_a/correct_b must be non-empty 1-D arrays of equal length, got {a.shape}, {b.shape}")
    return bootstrap_ci(a - b, n_resamples=n_resamples, confidence=confidence, seed=seed)


def sparse_probing(X_sae_tr, X_sae_te, X_raw_tr, X_raw_te, y_tr, y_te, ks=(1, 2, 5), n_resamples=1000, seed=0,
                   return_correct: bool = False):
    """One row per k in ks plus "all": k (str), acc_sae, acc_raw, diff = acc_sae - acc_raw, diff_lo/diff_hi
    (paired bootstrap 95% CI over test examples, paired_bootstrap_diff), n_train, n_test.
    k larger than a representation's width is clipped to that width. With ``return_correct``, also
    {k (str): (correct_sae, correct_raw)}, the per-test-example correctness (saeflow.evals.compare pairs it)."""
    import pandas as pd

    rows, correct = [], {}
    n_sae = np.asarray(X_sae_tr).shape[1]
    n_raw = np.asarray(X_raw_tr).shape[1]
    for k in list(ks) + [None]:
        if k is not None and (not isinstance(k, (int, np.integer)) or k < 1):
            raise ValueError(f"ks must contain ints >= 1, got {k!r}")
        acc_s, c_s = probe_accuracy(X_sae_tr, y_tr, X_sae_te, y_te, None if k is None else min(k, n_sae), seed)
        acc_r, c_r = probe_accuracy(X_raw_tr, y_tr, X_raw_te, y_te, None if k is None else min(k, n_raw), seed)
        d, lo, hi = paired_bootstrap_diff(c_s, c_r, n_resamples=n_resamples, seed=seed)
        name = "all" if k is None else str(int(k))
        rows.append({"k": name, "acc_sae": acc_s, "acc_raw": acc_r, "diff": d,
                     "diff_lo": lo, "diff_hi": hi, "n_train": int(len(y_tr)), "n_test": int(len(y_te))})
        correct[name] = (c_s, c_r)
    return (pd.DataFrame(rows), correct) if return_correct else pd.DataFrame(rows)


def binary_task(labels_train, labels_test):
    """Binary task from multi-class labels: the two most frequent train classes (ties: smaller label first)
    c1, c2. Returns (train_index, test_index, y_train, y_test, info) with indices of rows whose label is
    c1 or c2 and y = 1 where label == c1. info = {"positive", "negative", "n_train", "n_test"}.
    Raises ValueError with fewer than 2 train classes or when c1 or c2 is absent from test."""
    ltr = np.asarray(labels_train).astype(np.int64)
    lte = np.asarray(labels_test).astype(np.int64)
    vals, counts = np.unique(ltr, return_counts=True)
    if len(vals) < 2:
        raise ValueError(f"labels_train must hold at least 2 classes, got {vals.tolist()}")
    order = np.lexsort((vals, -counts))  # primary: count desc; secondary: label asc
    c1, c2 = int(vals[order[0]]), int(vals[order[1]])
    missing = [c for c in (c1, c2) if not (lte == c).any()]
    if missing:
        raise ValueError(f"labels_test: class(es) {missing} of the binary task ({c1} vs {c2}) absent from test")
    tr = np.flatnonzero((ltr == c1) | (ltr == c2))
    te = np.flatnonzero((lte == c1) | (lte == c2))
    y_tr = (ltr[tr] == c1).astype(np.int64)
    y_te = (lte[te] == c1).astype(np.int64)
    info = {"positive": c1, "negative": c2, "n_train": int(tr.size), "n_test": int(te.size)}
    return tr, te, y_tr, y_te, info


def load_labeled_hf(repo, revision, split, text_column="text", label_column="label", local_dir=None, max_docs=None):
    """Labeled documents (bias_in_bios style) via saeflow.data.corpus.load_hf_documents, which refuses any label
    that is not an integer (1.7, 1.0, "3", null, a bool: ValueError naming the row)."""
    from saeflow.data.corpus import load_hf_documents

    if not label_column:
        raise ValueError("label_column must name the integer label column, got an empty value")
    return load_hf_documents(repo, revision, split, text_column=text_column, label_column=label_column,
                             local_dir=local_dir, max_docs=max_docs)


def wilson_interval(acc, n, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval: (p + z^2/2n -/+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    p, n = float(acc), float(n)
    if n <= 0:
        return float("nan"), float("nan")
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, c - h)), float(min(1.0, c + h))
