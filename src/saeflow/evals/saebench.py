"""SAEBench's sparse-probing protocol (SAEBench `sparse_probing`, v0.6.0), reimplemented: sae-bench does not install
with this project's pins.

For a labelled set of items and a class list C (SAEBench's per dataset, `CLASS_SETS`):

1. Items per class (`class_samples`): n = train_size / 2 train items and test_size / 2 test items of every class in
   C, drawn without replacement (seeded); where the dataset has a balance column (bias_in_bios: gender; amazon
   reviews: rating), n / 2 of each of its two values ("quadrants"; a class with too few in one is dropped, as
   SAEBench drops it).
2. Representation of an item: the mean over its tokens of the site's activations (raw) and of the dictionary's
   codes (SAE), BOS, EOS and padding left out (`masked_mean`). Hugging Face items are the beginnings of their texts,
   `context_length` tokens (BOS first, truncated, padded); embedded items are the preset's windows.
3. For every class c (`one_vs_rest`): positives = c's items; negatives = ceil(n / (|C| - 1)) items of each other class,
   shuffled, the first n kept: a balanced binary task (train 2n, test 2n items).
4. Top-k dims by |mean over positives - mean over negatives| on train; sklearn LogisticRegression(L2, C=1,
   max_iter=1000) on them (saeflow.evals.probe.probe_accuracy); test accuracy, for k in `ks` and for every dim.
5. A dataset's accuracy at k = the mean over its classes (SAEBench's `sae_top_{k}_test_accuracy`,
   `llm_top_{k}_test_accuracy`; `sae_test_accuracy` / `llm_test_accuracy` with every dim).

Where this differs from SAEBench, and why: the probes on every dim are sklearn's (SAEBench trains those on the GPU
with its own torch probe), and the random draws are saeflow's (numpy, seeded), not SAEBench's pandas/torch
sequence, so the items are SAEBench's in size and balance, not one for one.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from saeflow.data.saebench_sets import CLASS_SETS  # noqa: F401 (SAEBench's class lists, for the tasks named after them)
from saeflow.evals.probe import probe_accuracy
from saeflow.tensors import to_numpy

TRAIN_SIZE, TEST_SIZE, CONTEXT_LENGTH, KS, SEED = 4000, 1000, 128, (1, 2, 5), 42


def class_samples(labels, classes, n: int, rng, groups=None) -> dict[int, np.ndarray]:
    """{class: n item indices} (step 1): with ``groups`` (the balance column's value of every item), n / 2 of each
    of the class's two groups; a class with fewer items than asked (in either group) is left out."""
    labels = np.asarray(labels)
    out = {}
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if groups is None:
            if idx.size >= n:
                out[int(c)] = np.sort(rng.choice(idx, n, replace=False))
            continue
        g = np.asarray(groups)[idx]
        values = np.unique(g)
        half = n // 2
        if values.size != 2 or min((g == v).sum() for v in values) < half:
            continue
        out[int(c)] = np.sort(np.concatenate([rng.choice(idx[g == v], half, replace=False) for v in values]))
    return out


def one_vs_rest(features: dict[int, np.ndarray], cls: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(X [2n, d], y [2n]) of class ``cls`` against the rest (step 3): its n items (y = 1), then n items drawn
    evenly from the other classes (ceil(n / (|C| - 1)) of each, shuffled, the first n; y = 0)."""
    pos = features[cls]
    others = [c for c in features if c != cls]
    if not others:
        raise ValueError("one-vs-rest needs at least two classes")
    per = math.ceil(len(pos) / len(others))
    neg = np.concatenate([features[c][rng.permutation(len(features[c]))[:per]] for c in others])
    neg = neg[rng.permutation(len(neg))[: len(pos)]]
    if len(neg) != len(pos):
        raise ValueError(f"class {cls}: {len(neg)} negatives for {len(pos)} positives; the other classes hold too few")
    return np.concatenate([pos, neg]), np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])


def evaluate(train: dict[str, dict[int, np.ndarray]], test: dict[str, dict[int, np.ndarray]], ks=KS,
             seed: int = SEED) -> pd.DataFrame:
    """Rows (representation, class, k, accuracy, n_train, n_test, correct) of every class's one-vs-rest probe
    (steps 3-4) for each representation ("sae", "raw"); k "all" is every dim; correct: the test items' correctness.
    ``train`` / ``test``: {representation: {class: [n, d] features}}, the same items in the same order for every
    representation; the negatives of a class are drawn with numpy ``default_rng([seed, class, 0 | 1])`` for
    every representation alike, so SAE and raw probes see the same items."""
    rows = []
    for c in sorted(next(iter(train.values()))):
        for rep in train:  # noqa: PLC0206 (the same class drawn for every representation)
            tr_rng, te_rng = np.random.default_rng([seed, c, 0]), np.random.default_rng([seed, c, 1])
            Xtr, ytr = one_vs_rest(train[rep], c, tr_rng)
            Xte, yte = one_vs_rest(test[rep], c, te_rng)
            for k in [*ks, None]:
                acc, correct = probe_accuracy(Xtr, ytr, Xte, yte, None if k is None else min(int(k), Xtr.shape[1]),
                                              seed)
                rows.append({"representation": rep, "class": int(c), "k": "all" if k is None else str(int(k)),
                             "accuracy": acc, "n_train": len(ytr), "n_test": len(yte), "correct": correct})
    return pd.DataFrame(rows)


def mean_ci(correct_by_class: list, n_resamples: int = 1000, confidence: float = 0.95,
            seed: int = 0) -> tuple[float, float, float]:
    """(mean over classes of each class's test accuracy, lo, hi): a percentile bootstrap resampling the test items
    of every class (the classes are SAEBench's fixed list, not a sample)."""
    groups = [np.asarray(c, dtype=np.float64) for c in correct_by_class]
    rng = np.random.default_rng(seed)
    boot = np.mean([g[rng.integers(0, g.size, (int(n_resamples), g.size))].mean(1) for g in groups], axis=0)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return float(np.mean([g.mean() for g in groups])), float(lo), float(hi)


def saebench_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """SAEBench's names for the means over classes (step 5): sae_top_{k}_test_accuracy, llm_top_{k}_test_accuracy,
    sae_test_accuracy and llm_test_accuracy."""
    out = {}
    for (rep, k), g in rows.groupby(["representation", "k"], sort=True):
        name = {"sae": "sae", "raw": "llm"}[rep]
        out[f"{name}_test_accuracy" if k == "all" else f"{name}_top_{k}_test_accuracy"] = float(g["accuracy"].mean())
    return out


def tokenize_beginnings(tokenizer, texts: list[str], context_length: int, bos_id: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N, L], keep [N, L]) of the beginnings of texts as SAEBench tokenizes them: BOS (when the model has one),
    then the text's tokens, truncated to `context_length` in all and padded after it; ``keep`` is False at BOS, EOS,
    pad-token ids and the padding (what the mean leaves out, SAEBench's `mask_bos_pad_eos_tokens`)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    special = [t for t in (bos_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None]
    ids = np.full((len(texts), context_length), pad, dtype=np.int64)
    keep = np.zeros((len(texts), context_length), dtype=bool)
    for i, t in enumerate(texts):
        row = (([bos_id] if bos_id is not None else []) + tokenizer.encode(t, add_special_tokens=False))[:context_length]
        ids[i, :len(row)] = row
        keep[i, :len(row)] = True
    keep &= ~np.isin(ids, special)
    return ids, keep


def masked_mean(model, ids, keep, hooks: list[str], encoders: dict, batch_size: int = 32) -> tuple[dict, dict]:
    """Mean over the kept positions of each hook's activations and of each encoder's codes (step 2), one forward per
    batch (padding after the text changes no earlier position of a causal model). encoders: {name: (hook, encode)};
    returns ({hook: [N, d]}, {name: [N, d_sae]}) float64."""
    import torch

    from saeflow.data.activations import site_batches

    keep_t = torch.as_tensor(np.asarray(keep))
    raw = {h: [] for h in hooks}
    codes = {n: [] for n in encoders}
    needed = list(dict.fromkeys([*hooks, *(h for h, _ in encoders.values())]))
    for i, acts in site_batches(model, ids, needed, batch_size, skip_bos=False):
        m = keep_t[i: i + batch_size]
        count = m.sum(1, keepdim=True).clamp_min(1).double()
        for h in hooks:
            a = acts[h]
            raw[h].append(to_numpy((a * m.to(a.device)[..., None]).double().sum(1) / count.to(a.device)))
        with torch.no_grad():
            for n, (h, encode) in encoders.items():
                x = acts[h]
                f = encode(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], x.shape[1], -1)
                codes[n].append(to_numpy((f * m.to(f.device)[..., None]).double().sum(1) / count.to(f.device)))
    return ({h: np.concatenate(v) for h, v in raw.items()}, {n: np.concatenate(v) for n, v in codes.items()})
