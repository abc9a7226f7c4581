"""Figure functions for the feature-influence analyses: each writes a non-trivial PNG from small synthetic
tables, degenerate inputs give a "no data" figure instead of an error."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from saeflow.report import entropy_figures, h_pos_figures, plotting

MIN_BYTES = 10_000
KINDS = ("echo", "topic", "filler")


@pytest.fixture
def texts(monkeypatch):
    """Records every text drawn on each figure saved through the module (then saves it as usual)."""
    seen: list[str] = []
    real = plotting.save

    def spy(fig, path):
        for t in fig.findobj(lambda a: hasattr(a, "get_text")):
            s = t.get_text()
            if s:
                seen.append(s)
        real(fig, path)

    monkeypatch.setattr(plotting, "save", spy)
    return seen


def _png_ok(path, min_bytes=MIN_BYTES):
    assert path.exists(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > min_bytes, (path, path.stat().st_size)
    # atomic write: no temporary file left behind
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def _depth_tables(n_layers=3, n_win=6, n_lat=30, T=32, seed=0):
    rng = np.random.default_rng(seed)
    fr, wr = [], []
    for L in range(n_layers):
        for w in range(n_win):
            k = int(rng.integers(4, 12))
            fids = rng.choice(n_lat, size=k, replace=False)
            ent = np.clip(rng.normal(1 + L, 0.6, k), 0, math.log2(T))
            act = rng.lognormal(0, 1, k)
            fr += [(L, w, int(f), float(e), float(a)) for f, e, a in zip(fids, ent, act)]
            wr.append((L, w, 32 * w, float(1.5 + L), k))
    features = pd.DataFrame(fr, columns=["layer", "window_idx", "feature_id", "entropy", "activation"])
    windows = pd.DataFrame(wr, columns=["layer", "window_idx", "start_idx", "token_vector_entropy",
                                        "num_active_features"])
    features.loc[0, "entropy"] = np.nan  # NaNs are dropped, not drawn
    return features, windows


def _grid_tables(presets=("pythia-70m", "gpt2-small"), datasets=("pile", "stories"), seed=0):
    rng = np.random.default_rng(seed)
    pl, tk = [], []
    for p, nl in zip(presets, (6, 12, 4, 8, 6, 26)):
        for d in datasets:
            for L in range(0, nl, max(1, nl // 4)):
                pl += [(p, d, L, nl, f, float(np.clip(rng.normal(1 + 3 * L / nl, 0.7), 0, 5)))
                       for f in range(15)]
                tk.append((p, d, L, nl, float(2 + 3 * L / nl)))
    return (pd.DataFrame(pl, columns=["preset", "dataset", "layer", "n_layers", "feature_id", "mean_entropy"]),
            pd.DataFrame(tk, columns=["preset", "dataset", "layer", "n_layers", "token_vector_entropy"]))


def _hpos_rows(ctx=64, n_feat=9, n_ev=6, kind=True, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_feat):
        k = KINDS[f % 3]
        mu = {"echo": 1.0, "topic": 0.6 * math.log2(ctx), "filler": 0.8 * math.log2(ctx)}[k]
        for e in range(n_ev):
            ok = e != n_ev - 1 or f % 2 == 0
            rows.append(dict(feature_id=100 + f, event_idx=e,
                             H_pos=float(np.clip(rng.normal(mu, 0.4), 0, math.log2(ctx))) if ok else np.nan,
                             peak_value=float(rng.lognormal(1, 0.5)), sum_J=float(rng.lognormal()),
                             status="ok" if ok else "inactive", kind=k))
    df = pd.DataFrame(rows)
    return df if kind else df.drop(columns="kind")


def test_entropy_depth_figure(tmp_path, texts):
    features, windows = _depth_tables()
    out = tmp_path / "depth.png"
    entropy_figures.entropy_depth_figure(features, windows, 32, "toy / data: entropy vs depth", out)
    _png_ok(out)
    assert "entropy (bits)" in texts
    assert any(t.startswith("log2 T = 5") for t in texts)
    assert any("n=" in t for t in texts)  # latents per layer in the tick labels


def test_entropy_depth_figure_empty(tmp_path, texts):
    features, windows = _depth_tables()
    out = tmp_path / "depth.png"
    entropy_figures.entropy_depth_figure(features.iloc[0:0], windows.iloc[0:0], 32, "empty", out)
    assert out.exists() and out.stat().st_size > 1000
    assert any("no data" in t for t in texts)


def test_layer_entropy_plots(tmp_path):
    features, windows = _depth_tables()
    out = tmp_path / "layer_1"  # created by the function
    entropy_figures.layer_entropy_plots(features, windows, 1, out)
    for name in ("entropy_hist.png", "entropy_vs_activation.png", "num_active_hist.png"):
        _png_ok(out / name)


def test_layer_entropy_plots_missing_layer(tmp_path, texts):
    features, windows = _depth_tables()
    entropy_figures.layer_entropy_plots(features, windows, 99, tmp_path / "l99")
    assert sorted(p.name for p in (tmp_path / "l99").iterdir()) == [
        "entropy_hist.png", "entropy_vs_activation.png", "num_active_hist.png"]
    assert sum("no active latents" in t or "no windows" in t for t in texts) == 3


@pytest.mark.parametrize("kind", ["violin", "boxplot"])
def test_entropy_grid_figure(tmp_path, texts, kind):
    pl, tk = _grid_tables()
    out = tmp_path / f"grid_{kind}.png"
    entropy_figures.entropy_grid_figure(pl, tk, out, kind=kind, ctx_len={"pythia-70m": 64, "gpt2-small": 64})
    _png_ok(out)
    assert "Feature-influence entropy vs depth" in texts
    assert "per-latent mean entropy (bits)" in texts
    assert {"pile", "stories"} <= set(texts)  # one legend entry per dataset


def test_entropy_grid_figure_six_presets(tmp_path):
    pl, tk = _grid_tables(presets=("a", "b", "c", "d", "e", "f"), datasets=("x", "y", "z"))
    out = tmp_path / "grid6.png"
    entropy_figures.entropy_grid_figure(pl, tk, out)
    _png_ok(out)


def test_entropy_grid_figure_bad_kind(tmp_path):
    pl, tk = _grid_tables()
    with pytest.raises(ValueError, match="kind"):
        entropy_figures.entropy_grid_figure(pl, tk, tmp_path / "x.png", kind="swarm")
    assert not (tmp_path / "x.png").exists()


def test_entropy_grid_figure_empty(tmp_path, texts):
    pl, tk = _grid_tables()
    out = tmp_path / "grid.png"
    entropy_figures.entropy_grid_figure(pl.iloc[0:0], tk.iloc[0:0], out)
    assert out.exists()
    assert any("no data" in t for t in texts)


@pytest.mark.parametrize("with_kind", [True, False])
def test_h_pos_overview(tmp_path, texts, with_kind):
    out = tmp_path / "hpos.png"
    h_pos_figures.h_pos_overview(_hpos_rows(kind=with_kind), 64, out)
    _png_ok(out)
    assert any(t.startswith("H_pos at top-activating events, ctx 64") for t in texts)
    if with_kind:
        assert any(t.startswith("echo") for t in texts)


def test_h_pos_overview_all_inactive(tmp_path, texts):
    rows = _hpos_rows().assign(status="inactive", H_pos=np.nan)
    out = tmp_path / "hpos.png"
    h_pos_figures.h_pos_overview(rows, 64, out)
    assert out.exists()
    assert any("no data" in t for t in texts)


@pytest.mark.parametrize("with_kind", [True, False])
def test_h_pos_vs_ctxlen(tmp_path, texts, with_kind):
    rows = pd.concat([_hpos_rows(ctx=c, kind=with_kind, seed=c).assign(ctx=c) for c in (16, 32, 64, 128)])
    out = tmp_path / "hctx.png"
    h_pos_figures.h_pos_vs_ctxlen(rows, out)
    _png_ok(out)
    assert {"16", "32", "64", "128"} <= set(texts)  # ticks at the context lengths


def test_h_pos_vs_ctxlen_all_inactive(tmp_path, texts):
    rows = pd.concat([_hpos_rows(ctx=c).assign(ctx=c) for c in (16, 32)]).assign(status="inactive",
                                                                                 H_pos=np.nan)
    out = tmp_path / "hctx.png"
    h_pos_figures.h_pos_vs_ctxlen(rows, out)
    assert out.exists()
    assert any("no data" in t for t in texts)


def _sweep_tables(layers=(0, 2, 4), lens=(8, 16, 32, 64, 128), seed=0):
    rng = np.random.default_rng(seed)
    sw = [(L, c, f, float(np.clip(rng.normal(0.5 * math.log2(c), 0.4), 0, math.log2(c))))
          for L in layers for c in lens for f in range(12)]
    tk = [(L, c, 0.8 * math.log2(c)) for L in layers for c in lens]
    return (pd.DataFrame(sw, columns=["layer", "ctx_len", "feature_id", "entropy"]),
            pd.DataFrame(tk, columns=["layer", "ctx_len", "token_vector_entropy"]))


def test_ctxlen_sweep_figure(tmp_path, texts):
    sweep, token = _sweep_tables()
    out = tmp_path / "sweep.png"
    entropy_figures.ctxlen_sweep_figure(sweep, token, out, "toy: entropy vs context length")
    _png_ok(out)
    assert "toy: entropy vs context length" in texts
    assert any(t.startswith("layer 4") for t in texts)


def test_ctxlen_sweep_figure_empty(tmp_path, texts):
    sweep, token = _sweep_tables()
    out = tmp_path / "sweep.png"
    entropy_figures.ctxlen_sweep_figure(sweep.iloc[0:0], token.iloc[0:0], out, "empty")
    assert out.exists()
    assert any("no data" in t for t in texts)


def test_ground_truth_figure(tmp_path, texts):
    rows = _hpos_rows()
    per = (rows[rows["status"] == "ok"].groupby("feature_id")
           .agg(kind=("kind", "first"), mean_H_pos=("H_pos", "mean")).reset_index())
    per.loc[len(per)] = [999, "echo", np.nan]  # NaN is dropped
    stats = {"mann_whitney_p": 0.003, "n_echo": 3, "n_topic": 3, "median_echo": 1.2, "median_topic": 3.4}
    out = tmp_path / "gt.png"
    h_pos_figures.ground_truth_figure(per, out, stats)
    _png_ok(out)
    joined = "\n".join(texts)
    assert "p = 0.003" in joined and "median topic = 3.4" in joined
    ticks = list(dict.fromkeys(t for t in texts if "\n(n = " in t))
    assert [t.split("\n")[0] for t in ticks] == ["echo", "topic", "filler"]  # fixed order


def test_ground_truth_figure_empty(tmp_path, texts):
    out = tmp_path / "gt.png"
    h_pos_figures.ground_truth_figure(pd.DataFrame(columns=["feature_id", "kind", "mean_H_pos"]), out, {})
    assert out.exists()
    assert any("no data" in t for t in texts)


def _compare_table():
    from saeflow.evals import compare

    g = np.random.default_rng(0)
    rows = []
    for L in (0, 2):
        for a, b, site_b in (("x", "y", "s"), ("x", "tc", "t")):
            ca, cb = g.random(60) < 0.9, g.random(60) < 0.6
            found = [compare.compare_correct(ca, cb, "probe_acc@1", "probe", "1", n_resamples=100)]
            if site_b == "s":  # the cross-site pair has no FVU row
                found.append(compare.compare_correct(cb, ca, "fvu", "recon", "", n_resamples=100))
            found.append(compare.compare_unpaired_means(g.normal(1, 1, 30), g.normal(3, 1, 40), "mean_H_pos@ctx32",
                                                        "h_pos", "32", n_resamples=100))
            rows += [{"layer": L, "a": a, "b": b, "site_a": "s", "site_b": site_b, **r} for r in found]
    return pd.DataFrame(rows)


def test_compare_figure(tmp_path, texts):
    from saeflow.report import eval_figures

    out = tmp_path / "compare.png"
    eval_figures.compare_figure(_compare_table(), out, "Head-to-head: test")
    _png_ok(out)
    joined = "\n".join(texts)
    assert "L2: x vs tc" in joined and "not compared (different sites)" in joined
    assert "probe accuracy, k=1 (higher better)" in joined and "mean H_pos over latents, ctx 32 (unpaired)" in joined
    assert "A - B (unpaired bootstrap CI)" in joined and "A better" in joined


def test_compare_figure_refuses_a_table_without_its_columns(tmp_path):
    from saeflow.report import eval_figures

    with pytest.raises(ValueError, match="missing columns"):
        eval_figures.compare_figure(_compare_table().drop(columns=["verdict"]), tmp_path / "c.png", "t")


def test_feature_diff_figure(tmp_path, texts):
    from saeflow.report import eval_figures

    g = np.random.default_rng(1)
    rows, layers = [], {}
    for L in (0, 1):
        layers[str(L)] = {}
        for side, preset in (("A", "p"), ("B", "q")):
            corr = np.clip(np.concatenate([g.uniform(0.6, 1.0, 40), g.uniform(0.0, 0.3, 24)]), -1, 1)
            t = pd.DataFrame({"layer": L, "side": side, "preset": preset, "latent": np.arange(64), "live": True,
                              "max_corr": corr, "null_max_corr": g.uniform(0, 0.2, 64),
                              "asymmetry": g.lognormal(0, 1, 64), "unmatched": corr < 0.5})
            rows.append(t)
            um = t[t["unmatched"]]
            layers[str(L)][side] = {"preset": preset, "n_live": 64, "n_unmatched": len(um), "null_q99": 0.19,
                                    "unmatched_top": [{"latent": int(r.latent), "asymmetry": float(r.asymmetry),
                                                       "max_corr": float(r.max_corr)} for r in um.head(3).itertuples()]}
    out = tmp_path / "fd.png"
    eval_figures.feature_diff_figure(pd.concat(rows), {"threshold": 0.5, "layers": layers}, out, "Feature diff: test")
    _png_ok(out)
    joined = "\n".join(texts)
    assert "A = p: 24/64 live unmatched" in joined and "threshold 0.5" in joined and "layer 1: best match per live latent" in joined
