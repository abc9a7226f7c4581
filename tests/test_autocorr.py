"""Activation autocorrelation: AR(1) and periodic ground truth, exact agreement with a slow per-doc,
per-lag loop (pooling with per-document means), autocorrelation length, top examples, outputs, figures."""
import json

import numpy as np
import pandas as pd
import pytest

from saeflow.evals.autocorr import AutocorrAccumulator, TopExamples, autocorr_length, select_latents, write_outputs
from saeflow.report.eval_figures import autocorr_figure, autocorr_vs_entropy_figure


def ar1(rng, n, phi, n_lat):
    x = np.zeros((n, n_lat))
    e = rng.standard_normal((n, n_lat))
    x[0] = e[0] / np.sqrt(1 - np.asarray(phi) ** 2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


def slow_rho(docs, max_lag):
    n_lat = docs[0].shape[1]
    num = np.zeros((n_lat, max_lag + 1))
    den = np.zeros(n_lat)
    for f in docs:
        for a in range(n_lat):
            g = f[:, a] - f[:, a].mean()
            den[a] += sum(g[t] ** 2 for t in range(len(g)))
            for tau in range(max_lag + 1):
                num[a, tau] += sum(g[t] * g[t + tau] for t in range(len(g) - tau))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den[:, None] > 0, num / den[:, None], np.nan)


def test_ar1_matches_phi_power():
    rng = np.random.default_rng(0)
    phi = np.array([0.3, 0.7, 0.9])
    acc = AutocorrAccumulator(3, 10)
    for _ in range(8):
        acc.add(ar1(rng, 20000, phi, 3))
    r = acc.rho()
    tau = np.arange(11)
    np.testing.assert_allclose(r, phi[:, None] ** tau[None], atol=0.03)
    assert np.allclose(r[:, 0], 1.0)


def test_periodic_sinusoid():
    P = 16
    t = np.arange(4096)
    acc = AutocorrAccumulator(1, P)
    for ph in (0.0, 1.0, 2.5):
        acc.add(np.sin(2 * np.pi * t / P + ph)[:, None])
    r = acc.rho()[0]
    assert abs(r[P] - 1) < 0.01 and abs(r[P // 2] + 1) < 0.01


def test_matches_slow_loop_with_pooling():
    rng = np.random.default_rng(1)
    # different lengths (one shorter than max_lag) and different per-doc offsets: pooling must use
    # per-document means, not the global mean
    docs = [rng.standard_normal((n, 4)) + rng.normal(0, 3, size=4) for n in (50, 7, 123, 31)]
    docs[2][:, 3] = np.maximum(docs[2][:, 3], 0)
    acc = AutocorrAccumulator(4, 12)
    for d in docs:
        acc.add(d)
    np.testing.assert_allclose(acc.rho(), slow_rho(docs, 12), atol=1e-10, rtol=0)
    # global-mean pooling would differ
    cat = np.concatenate(docs)
    acc2 = AutocorrAccumulator(4, 12)
    acc2.add(cat)
    assert np.abs(acc2.rho() - acc.rho()).max() > 0.05
    assert acc.n_tokens == sum(len(d) for d in docs)
    np.testing.assert_allclose(acc.density(), (cat > 0).mean(axis=0))


def test_constant_latent_nan_and_validation():
    acc = AutocorrAccumulator(2, 3)
    f = np.zeros((20, 2))
    f[:, 1] = np.arange(20) % 3
    f[:, 0] = 2.0
    acc.add(f)
    r = acc.rho()
    assert np.all(np.isnan(r[0])) and np.all(np.isfinite(r[1]))
    assert np.isnan(autocorr_length(r)[0])
    with pytest.raises(ValueError, match="max_lag"):
        AutocorrAccumulator(2, -1)
    with pytest.raises(ValueError, match="n_latents"):
        AutocorrAccumulator(0, 3)
    with pytest.raises(ValueError, match="f must"):
        acc.add(np.zeros((5, 3)))


def test_autocorr_length():
    tau = np.arange(41)
    rho = np.stack([np.exp(-tau / 5), np.exp(-tau / 2.5), np.ones(41), 1 - tau / 100])
    ell = autocorr_length(rho)
    assert abs(ell[0] - 5) < 0.05 and abs(ell[1] - 2.5) < 0.05
    assert np.isnan(ell[2]) and np.isnan(ell[3])
    # exact linear interpolation
    assert autocorr_length(np.array([[1.0, 0.5, 0.2]]))[0] == pytest.approx(1 + (0.5 - np.exp(-1)) / 0.3)


def test_select_latents():
    d = np.array([0.01, 0.2, 0.05, 0.5, np.nan, 0.05, 0.001])
    assert select_latents(d, 0.01, 0.3).tolist() == [1, 2, 5, 0]
    assert select_latents(d, 0.01, 0.3, max_n=2).tolist() == [1, 2]
    with pytest.raises(ValueError, match="lo"):
        select_latents(d, 0.5, 0.1)
    with pytest.raises(ValueError, match="max_n"):
        select_latents(d, 0.0, 1.0, max_n=-1)


def test_top_examples():
    rng = np.random.default_rng(2)
    R = 4
    top = TopExamples(np.array([0, 2]), k=3, radius=R)
    docs = {}
    for doc in range(6):
        n = 10 + doc
        f = rng.random((n, 3))
        docs[doc] = f
        top.add(doc, f)
    top.add(99, np.zeros((5, 3)))  # no firing: never an event
    tab = top.table()
    assert list(tab.columns) == ["feature_id", "rank", "doc_id", "peak_position", "peak_value"]
    tr = top.traces()
    assert set(tr) == {"0", "2"}
    for a in (0, 2):
        t = tab[tab.feature_id == a]
        assert len(t) == 3 and t.doc_id.is_unique and 99 not in t.doc_id.values
        # expected: per-doc argmax, top 3 by value
        exp = sorted(((docs[d][:, a].max(), d, int(docs[d][:, a].argmax())) for d in docs), key=lambda e: -e[0])[:3]
        assert t.doc_id.tolist() == [e[1] for e in exp]
        assert t.peak_position.tolist() == [e[2] for e in exp]
        assert np.all(np.diff(t.peak_value.to_numpy()) <= 0) and t["rank"].tolist() == [0, 1, 2]
        s = tr[str(a)]
        assert s.shape == (3, 2 * R + 1)
        np.testing.assert_allclose(s[:, R], 1.0)
        for row, (v, d, p) in zip(s, exp):
            f = docs[d][:, a]
            for j in range(2 * R + 1):
                q = p - R + j
                assert row[j] == pytest.approx(f[q] / v if 0 <= q < len(f) else 0.0)

    # edge padding explicitly: peak at position 1 of a 3-token doc
    t2 = TopExamples(np.array([0]), k=2, radius=3)
    t2.add(7, np.array([[0.5], [2.0], [1.0]]))
    np.testing.assert_allclose(t2.traces()["0"][0], [0, 0, 0.25, 1.0, 0.5, 0, 0])
    with pytest.raises(ValueError, match="k"):
        TopExamples(np.array([0]), k=0)


def make_run(tmp_path, with_entropy=True):
    rng = np.random.default_rng(3)
    n_lat, max_lag = 12, 16
    phi = np.linspace(0.2, 0.95, n_lat)
    acc = AutocorrAccumulator(n_lat, max_lag)
    lat_all = np.arange(n_lat)
    docs = []
    for d in range(6):
        x = ar1(rng, 600, phi, n_lat)
        f = np.maximum(x - rng.normal(0.0, 0.5, n_lat), 0)
        docs.append(f)
        acc.add(f)
    dens = acc.density()
    lat = select_latents(dens, 0.0, 1.0, max_n=10)
    top = TopExamples(lat, k=4, radius=64)
    for d, f in enumerate(docs):
        top.add(d, f)
    sel = pd.DataFrame({"feature_id": lat, "density": dens[lat]})
    ent = None
    if with_entropy:
        ent = pd.DataFrame({"feature_id": np.repeat(lat, 3),
                            "H_pos": np.repeat(lat_all[lat] * 0.3, 3) + rng.normal(0, 0.2, 3 * len(lat))})
    return acc, lat, top, sel, ent


def test_write_outputs(tmp_path):
    acc, lat, top, sel, ent = make_run(tmp_path)
    out = tmp_path / "run"
    write_outputs(out, sel, top, acc.rho(), lat, {"max_lag": 16, "k": 4}, ent)
    names = {"selected_features.csv", "top_examples.csv", "activation_traces.npz", "autocorr_curves.csv",
             "entropy_targets.csv", "feature_summary.csv", "run_config.json"}
    assert names <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    z = np.load(out / "activation_traces.npz", allow_pickle=False)
    assert set(z.files) == {str(a) for a in lat} and z[str(lat[0])].shape[1] == 129
    np.testing.assert_allclose(z[str(lat[0])][:, 64], 1.0)
    cur = pd.read_csv(out / "autocorr_curves.csv")
    assert len(cur) == len(lat) * 17 and list(cur.columns) == ["feature_id", "lag", "rho"]
    summ = pd.read_csv(out / "feature_summary.csv")
    assert list(summ.columns) == ["feature_id", "density", "autocorr_length", "rho_1", "rho_8", "mean_H_pos"]
    np.testing.assert_allclose(summ.rho_1, acc.rho()[lat, 1])
    assert json.loads((out / "run_config.json").read_text())["k"] == 4

    out2 = tmp_path / "run2"
    write_outputs(out2, sel, top, acc.rho()[:, :5], lat, {}, None)
    assert not (out2 / "entropy_targets.csv").exists()
    assert list(pd.read_csv(out2 / "feature_summary.csv").columns) == ["feature_id", "density",
                                                                      "autocorr_length", "rho_1"]
    with pytest.raises(ValueError, match="selected"):
        write_outputs(out2, sel.drop(columns="density"), top, acc.rho(), lat, {}, None)


def test_figures(tmp_path):
    acc, lat, top, sel, ent = make_run(tmp_path)
    rho = acc.rho()
    p1 = tmp_path / "autocorr.png"
    autocorr_figure(rho, lat, p1, "autocorrelation (synthetic AR(1))")
    summ = pd.DataFrame({"feature_id": lat, "autocorr_length": autocorr_length(rho[lat]),
                         "mean_H_pos": ent.groupby("feature_id")["H_pos"].mean().reindex(lat).to_numpy()})
    p2 = tmp_path / "vs_entropy.png"
    autocorr_vs_entropy_figure(summ, p2, "autocorr length vs H_pos")
    p3 = tmp_path / "empty.png"
    autocorr_vs_entropy_figure(summ.iloc[:0], p3, "empty")
    p4 = tmp_path / "empty_ac.png"
    autocorr_figure(rho, [], p4, "empty")
    for p in (p1, p2):
        assert p.stat().st_size > 10_000
    assert p3.exists() and p4.exists()
