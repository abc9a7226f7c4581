import math

import numpy as np
import pandas as pd
import pytest

from saeflow.evals import probe
from saeflow.report import eval_figures


def _planted(n=400, d=60, informative=(7, 23, 41), seed=0, shift=3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d))
    for j, i in enumerate(informative):
        X[:, i] += shift * (1 + 0.1 * j) * (2 * y - 1)
    return X, y


def test_select_top_k_finds_planted_dims():
    X, y = _planted()
    assert sorted(probe.select_top_k(X, y, 3).tolist()) == [7, 23, 41]
    assert probe.select_top_k(X, y, 1).tolist() == [41]  # largest shift
    # stable tie-break by index
    Xt = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert probe.select_top_k(Xt, np.array([1, 0]), 2).tolist() == [0, 1]
    with pytest.raises(ValueError, match="k must"):
        probe.select_top_k(X, y, 0)


def test_probe_accuracy_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    X, y = _planted(shift=0.4, seed=1)
    Xtr, ytr, Xte, yte = X[:300], y[:300], X[300:], y[300:]
    for k in (2, None):
        acc, correct = probe.probe_accuracy(Xtr, ytr, Xte, yte, k, seed=3)
        cols = probe.select_top_k(Xtr, ytr, k) if k else np.arange(X.shape[1])
        clf = LogisticRegression(C=1.0, max_iter=1000, random_state=3).fit(Xtr[:, cols], ytr)
        ref = clf.predict(Xte[:, cols]) == yte
        assert correct.dtype == bool and np.array_equal(correct, ref)
        assert acc == pytest.approx(ref.mean())


def test_sparse_probing_planted_and_shuffled():
    X, y = _planted(n=500)
    rng = np.random.default_rng(5)
    raw = rng.normal(size=X.shape)  # uninformative baseline
    tr, te = slice(0, 350), slice(350, None)
    df = probe.sparse_probing(X[tr], X[te], raw[tr], raw[te], y[tr], y[te], n_resamples=300)
    assert df["k"].tolist() == ["1", "2", "5", "all"]
    assert (df["acc_sae"] >= 0.97).all()
    assert (np.abs(df["acc_raw"] - 0.5) < 0.15).all()
    assert np.allclose(df["diff"], df["acc_sae"] - df["acc_raw"])
    assert (df["diff_lo"] <= df["diff"]).all() and (df["diff"] <= df["diff_hi"]).all()
    assert (df["diff_lo"] > 0.2).all()
    assert (df["n_train"] == 350).all() and (df["n_test"] == 150).all()
    # label-shuffled: chance level
    ys = rng.permutation(y)
    df2 = probe.sparse_probing(X[tr], X[te], raw[tr], raw[te], ys[tr], ys[te], n_resamples=100)
    assert (np.abs(df2["acc_sae"] - 0.5) < 0.15).all()


def test_paired_bootstrap_diff_matches_loop():
    rng = np.random.default_rng(0)
    a = rng.random(57) < 0.8
    b = rng.random(57) < 0.6
    point, lo, hi = probe.paired_bootstrap_diff(a, b, n_resamples=500, seed=11)
    # slow reference: same generator draws, one resample at a time
    g = np.random.default_rng(11)
    idx = g.integers(0, 57, size=(500, 57))
    vals = [a[i].mean() - b[i].mean() for i in idx]
    assert point == pytest.approx(a.mean() - b.mean())
    assert (lo, hi) == pytest.approx(tuple(np.quantile(vals, [0.025, 0.975])))
    assert probe.paired_bootstrap_diff(a, a) == (0.0, 0.0, 0.0)


def test_mean_pool_excludes_bos():
    import torch

    acts = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    acts[:, 0] = 1e6  # BOS: must not leak
    out = probe.mean_pool(acts)
    assert out.dtype == np.float64
    assert np.allclose(out, acts[:, 1:].astype(np.float64).mean(axis=1))
    assert np.allclose(probe.mean_pool(torch.from_numpy(acts)), out)
    mask = np.array([[False, True, False, False], [True, True, True, True]])
    out2 = probe.mean_pool(acts, mask)
    assert np.allclose(out2[0], acts[0, 1]) and np.allclose(out2[1], acts[1].mean(axis=0))
    with pytest.raises(ValueError, match="mask"):
        probe.mean_pool(acts, np.zeros((2, 4), bool))


def test_binary_task():
    ltr = np.array([3, 1, 1, 2, 2, 3, 0, 3, 1])  # 3 and 1 tie at 3 -> 1 first (smaller label)
    lte = np.array([1, 0, 3, 2, 3])
    tr, te, ytr, yte, info = probe.binary_task(ltr, lte)
    assert (info["positive"], info["negative"]) == (1, 3)
    assert tr.tolist() == [0, 1, 2, 5, 7, 8] and ytr.tolist() == [0, 1, 1, 0, 0, 1]
    assert te.tolist() == [0, 2, 4] and yte.tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="labels_test"):
        probe.binary_task(ltr, np.array([1, 2]))
    with pytest.raises(ValueError, match="labels_train"):
        probe.binary_task(np.array([4, 4]), lte)


def test_load_labeled_hf(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"text": ["a doc", "  ", "another", "third"], "label": [2, 5, 7, 2]}),
                   tmp_path / "data" / "train-00000-of-00001.parquet")
    docs = probe.load_labeled_hf("org/bios", "v1.0", "train", local_dir=str(tmp_path))
    assert [d.text for d in docs] == ["a doc", "another", "third"]
    assert [d.label for d in docs] == [2, 7, 2]
    assert len(probe.load_labeled_hf("org/bios", "v1.0", "train", local_dir=str(tmp_path), max_docs=2)) == 2
    from saeflow.data import corpus

    for i, labels in enumerate([[2.0, 1.7], [2.0, 1.0], ["2", "3"], [2, None], [False, True]]):
        bad = tmp_path / f"bad{i}"
        (bad / "data").mkdir(parents=True)
        pq.write_table(pa.table({"text": ["x", "y"], "label": labels}), bad / "data" / "train-00000-of-00001.parquet")
        # never truncated or guessed: refused naming the row, by the probe and by the corpus step alike
        with pytest.raises(ValueError, match=r"label_column: the label of .*parquet:[01] is"):
            probe.load_labeled_hf("org/bios", "v1.0", "train", local_dir=str(bad))
        with pytest.raises(ValueError, match="labels must be integers"):
            corpus.load_hf_documents("org/bios", "v1.0", "train", label_column="label", local_dir=str(bad))


def test_probe_figure(tmp_path):
    rows = []
    for task, base in (("prof 1 vs 2", 0.7), ("gender", 0.8)):
        for i, k in enumerate(["1", "2", "5", "all"]):
            rows.append({"task": task, "k": k, "acc_sae": base + 0.05 * i, "acc_raw": base - 0.1 + 0.07 * i,
                         "n_test": 200})
    path = tmp_path / "probe.png"
    eval_figures.probe_figure(pd.DataFrame(rows), path, "sparse probing")
    assert path.stat().st_size > 10_000
    assert list(tmp_path.iterdir()) == [path]
    lo, hi = probe.wilson_interval(0.9, 100)
    assert lo < 0.9 < hi and 0 <= lo and hi <= 1


def test_wilson_interval_matches_scipy():
    from scipy.stats import binomtest

    for k, n in ((7, 10), (70, 70), (0, 12), (300, 500)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert probe.wilson_interval(k / n, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert all(math.isnan(v) for v in probe.wilson_interval(0.5, 0))
