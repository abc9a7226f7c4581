"""Token windows: documents split train/eval, seeded windows of ctx_len tokens starting with BOS,
and the window-acceptance filter.
"""

from __future__ import annotations

import numpy as np


def split_documents(n_docs: int, eval_fraction: float, seed: int,
                    labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, covering, sorted int64 index arrays (train, eval) over range(n_docs).

    eval holds round(n_docs * eval_fraction) documents drawn at random from `seed`, but at least one and at
    most n_docs - 1 when n_docs >= 2 (none when n_docs == 1). With ``labels`` (one per document) the split
    is stratified: that rule applies within each label's documents (seed + the label's rank), so every
    label with two or more documents is in both splits (a mixture's parts, whatever their sizes).
    """
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != n_docs:
            raise ValueError(f"labels: {len(labels)} labels for {n_docs} documents")
        tr, ev = [], []
        for r, z in enumerate(np.unique(labels)):
            idx = np.flatnonzero(labels == z)
            a, b = split_documents(len(idx), eval_fraction, seed + r)
            tr.append(idx[a])
            ev.append(idx[b])
        return np.sort(np.concatenate(tr)).astype(np.int64), np.sort(np.concatenate(ev)).astype(np.int64)
    if int(n_docs) != n_docs or n_docs < 1:
        raise ValueError(f"n_docs must be an integer >= 1, got {n_docs!r}")
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    n_eval = 0 if n_docs == 1 else min(max(1, round(n_docs * eval_fraction)), n_docs - 1)
    perm = np.random.default_rng(seed).permutation(n_docs)
    return np.sort(perm[n_eval:]).astype(np.int64), np.sort(perm[:n_eval]).astype(np.int64)


MARKUP_CHARS = frozenset("=<>[]{}|#*_\\@")


def window_filter(min_alpha_frac: float = 0.0, max_markup_frac: float = 1.0):
    """Acceptance test of a window's text (the seed project's per-dataset window filters): reject text that
    is empty or whitespace, has fewer than `min_alpha_frac` letters among its non-space characters, or more
    than `max_markup_frac` markup characters (MARKUP_CHARS: wiki headings, HTML, tables). None when both
    bounds are trivial, so unfiltered datasets sample exactly as before."""
    if min_alpha_frac <= 0 and max_markup_frac >= 1:
        return None

    def accept(text: str) -> bool:
        chars = [c for c in text if not c.isspace()]
        if not chars:
            return False
        alpha = sum(c.isalpha() for c in chars) / len(chars)
        markup = sum(c in MARKUP_CHARS for c in chars) / len(chars)
        return alpha >= min_alpha_frac and markup <= max_markup_frac

    return accept


def cut_windows(
    token_docs: list[np.ndarray], ctx_len: int, n_windows: int, seed: int, bos_id: int, accept=None
) -> dict[str, np.ndarray]:
    """`n_windows` distinct windows [bos_id] + doc[start : start + ctx_len - 1], sampled from `seed`.

    Every (document, start) pair with a full window is equally likely, i.e. documents are drawn in
    proportion to their number of valid starts and the start uniformly; documents shorter than ctx_len - 1
    tokens give none. No pair is drawn twice; asking for more windows than pairs exist raises ValueError.
    `accept(body_tokens) -> bool` (optional) rejects windows: a seeded random sample of candidate pairs is
    drawn without replacement, in random order, and its first `n_windows` accepted pairs are kept (a
    uniform sample of the accepted pairs); if too few pass, a 4x larger sample is drawn, up to all pairs,
    and then ValueError.
    Returns int64 arrays sorted by (doc_idx, start_idx): "tokens" [n, ctx_len], "doc_idx" [n] and
    "start_idx" [n] (offset in its document of the first non-BOS token).
    """
    if int(ctx_len) != ctx_len or ctx_len < 2:
        raise ValueError(f"ctx_len must be an integer >= 2, got {ctx_len!r}")
    if int(n_windows) != n_windows or n_windows < 1:
        raise ValueError(f"n_windows must be an integer >= 1, got {n_windows!r}")
    body = ctx_len - 1
    n_starts = np.array([max(len(d) - body + 1, 0) for d in token_docs], dtype=np.int64)
    total = int(n_starts.sum())
    if n_windows > total:
        raise ValueError(
            f"n_windows: {n_windows} windows of ctx_len {ctx_len} requested, but the {len(token_docs)} "
            f"documents hold only {total} distinct windows"
        )
    # Sampling flat pair indices without replacement is exactly "doc by weight, then uniform start", minus
    # duplicates; sorting them sorts by (doc, start). Generator.choice uses Floyd's method for large totals.
    offsets = np.concatenate([[0], np.cumsum(n_starts)])
    if accept is None:
        flat = np.sort(np.random.default_rng(seed).choice(total, size=n_windows, replace=False))
    else:
        flat = _accepted_pairs(token_docs, offsets, body, total, n_windows, seed, accept)
    doc_idx = np.searchsorted(offsets, flat, side="right") - 1
    start_idx = flat - offsets[doc_idx]
    tokens = np.empty((n_windows, ctx_len), dtype=np.int64)
    tokens[:, 0] = bos_id
    uniq, first, counts = np.unique(doc_idx, return_index=True, return_counts=True)
    for d, i, c in zip(uniq, first, counts):  # doc_idx is sorted: each document's rows are contiguous
        view = np.lib.stride_tricks.sliding_window_view(np.asarray(token_docs[d]), body)
        tokens[i : i + c, 1:] = view[start_idx[i : i + c]]
    return {"tokens": tokens, "doc_idx": doc_idx.astype(np.int64), "start_idx": start_idx.astype(np.int64)}


def _accepted_pairs(token_docs, offsets, body, total, n_windows, seed, accept) -> np.ndarray:
    """Sorted flat pair indices of the first n_windows accepted candidates of a seeded random sample of
    2 * n_windows pairs (then 4x larger samples): a filter that keeps most windows costs ~n_windows tests."""
    m = min(total, 2 * n_windows)
    while True:
        order = np.random.default_rng(seed).choice(total, size=m, replace=False)
        kept = []
        for f in order:
            d = int(np.searchsorted(offsets, f, side="right") - 1)
            start = int(f - offsets[d])
            if accept(np.asarray(token_docs[d][start : start + body])):
                kept.append(f)
                if len(kept) == n_windows:
                    return np.sort(np.array(kept, dtype=np.int64))
        if m == total:
            raise ValueError(f"window_filter: only {len(kept)} of {total} windows pass the filter; "
                             f"{n_windows} were requested (relax the dataset's window_filter)")
        m = min(total, 4 * m)
