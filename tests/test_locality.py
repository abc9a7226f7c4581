"""Locality analyses: top-event scan vs a slow reference; H_pos / sweep / entropy-vs-depth consistent
with direct `window_influence` calls; ground-truth contrast vs scipy."""
import numpy as np
import pandas as pd
import pytest
import torch
from ties import matched_latents

from saeflow.evals import locality
from saeflow.evals.influence import DictSpec, window_influence
from saeflow.models.lm import make_config


def slow_top_events(f, T, k, min_pos):
    """Straightforward: per latent, per window argmax over positions >= min_pos, then top k windows."""
    n_w = f.shape[0] // T
    f = f.reshape(n_w, T, -1)
    rows = []
    for a in range(f.shape[2]):
        ev = []
        for w in range(n_w):
            seg = f[w, min_pos - 1:, a]
            p = int(np.argmax(seg))
            ev.append((float(seg[p]), w, p + min_pos))
        ev.sort(key=lambda e: -e[0])
        for i, (v, w, p) in enumerate(ev[:k]):
            if v > 0:
                rows.append((a, i, w, p, v))
    return pd.DataFrame(rows, columns=["feature_id", "event_idx", "window_idx", "pos", "activation"])


def test_top_events_matches_slow_reference_across_blocks():
    rng = np.random.default_rng(0)
    T, n_w, d = 7, 30, 5
    f = np.maximum(rng.normal(size=(n_w * T, d)), 0).astype(np.float32)
    f[:, 4] = 0  # a dead latent has no events
    want = slow_top_events(f, T, 4, 3)
    blocks = [f[i * T * 4:(i + 1) * T * 4] for i in range(8)]  # 4 windows per block, last one shorter
    got = locality.top_events(blocks, T, 4, min_pos=3)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)
    assert (got.groupby(["feature_id", "window_idx"]).size() == 1).all()  # one event per window per latent
    with pytest.raises(ValueError, match="whole windows"):
        locality.top_events([f[:10]], T, 2)


@pytest.fixture(scope="module")
def setup():
    from sae_lens import TopKSAE, TopKSAEConfig
    from transformer_lens import HookedTransformer

    torch.manual_seed(0)
    arch = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_mlp": 32, "act_fn": "gelu", "n_ctx": 16}
    model = HookedTransformer(make_config(arch, 40)).eval()
    dicts = {}
    for L in (0, 1):
        sae = TopKSAE(TopKSAEConfig(d_in=16, d_sae=48, k=6))
        with torch.no_grad():
            for p in sae.parameters():
                p.normal_(0, 0.3)
        dicts[L] = DictSpec(sae, f"blocks.{L}.hook_resid_post")
    tokens = np.random.default_rng(1).integers(3, 40, (12, 16))
    tokens[:, 0] = 0
    return model, dicts, tokens


def test_entropy_vs_depth_rows_equal_direct_calls(setup):
    model, dicts, tokens = setup
    res = locality.entropy_vs_depth(model, tokens, np.arange(12) * 100, dicts, 0.0, 3, seed=5, progress=False)
    again = locality.entropy_vs_depth(model, tokens, np.arange(12) * 100, dicts, 0.0, 3, seed=5, progress=False)
    pd.testing.assert_frame_equal(res[1]["features"], again[1]["features"])  # seeded sample
    w = int(res[1]["windows"]["window_idx"].iloc[0])
    direct = window_influence(model, torch.as_tensor(tokens[w]), dicts, 0.0)
    for L in (0, 1):
        rows = res[L]["features"][res[L]["features"]["window_idx"] == w]
        ir, idr = matched_latents(rows["feature_id"], rows["activation"], direct[L].latents, direct[L].activations,
                                  threshold=0.0)
        np.testing.assert_allclose(rows["entropy"].to_numpy()[ir], direct[L].H[idr], rtol=1e-6)
        J = res[L]["arrays"]["feature_influences"][rows.index[ir]]
        np.testing.assert_allclose(J, direct[L].J[idr], rtol=1e-6)
        # feature_activations at the last position are the activations the latents were selected by.
        np.testing.assert_allclose(res[L]["arrays"]["feature_activations"][rows.index, -1], rows["activation"], rtol=1e-5)
        assert res[L]["arrays"]["token_vector_influence"].shape == (3, 16)
        assert ((rows["entropy"] >= 0) & (rows["entropy"] <= np.log2(16) + 1e-9)).all()
    summary = locality.mean_entropy_per_latent(res[0]["features"])
    assert set(summary.columns) == {"feature_id", "mean_entropy", "n_windows", "mean_activation"}


def test_h_pos_equals_influence_on_the_truncated_window(setup):
    model, dicts, tokens = setup
    events = pd.DataFrame({"feature_id": [3, 3, 7], "event_idx": [0, 1, 0], "window_idx": [0, 2, 5],
                           "pos": [15, 10, 12], "activation": [1.0, 0.5, 0.2]})
    out = locality.h_pos(model, tokens, events, dicts[1], 1, [6], bos_id=0, threshold=0.0, progress=False)
    rows, infl = out[6]
    assert list(rows.columns[:5]) == ["feature_id", "event_idx", "window_idx", "pos", "activation"]
    for i, e in rows.iterrows():
        ctx = torch.as_tensor(np.concatenate([[0], tokens[e.window_idx][e.pos - 4: e.pos + 1]]))
        r = window_influence(model, ctx, {1: dicts[1]}, 0.0, token_vector=False)[1]
        if e.feature_id in r.latents:
            j = list(r.latents).index(e.feature_id)
            assert e.status == "ok" and len(infl[str(i)]) == 6
            np.testing.assert_allclose(infl[str(i)], r.J[j], rtol=1e-5)
            assert e.H_pos == pytest.approx(r.H[j], abs=1e-5) and e.peak_value == pytest.approx(r.activations[j])
        else:
            assert e.status == "inactive" and np.isnan(e.H_pos)
    with pytest.raises(ValueError, match="min_pos"):
        locality.h_pos(model, tokens, events.assign(pos=2), dicts[1], 1, [6], 0, 0.0, progress=False)


def test_ctxlen_sweep_lengths_and_reference(setup):
    model, dicts, tokens = setup
    feats, tok = locality.ctxlen_sweep(model, tokens[0], dicts, 0.0, [4, 8, 16], bos_id=0)
    assert sorted(tok["ctx_len"].unique()) == [4, 8, 16]
    np.testing.assert_allclose(tok["log2_ctx_len"], np.log2(tok["ctx_len"]))
    for _, r in feats.iterrows():
        assert 0 <= r.entropy <= np.log2(r.ctx_len) + 1e-9
    with pytest.raises(ValueError, match="context length"):
        locality.ctxlen_sweep(model, tokens[0], dicts, 0.0, [17], bos_id=0)


def test_kind_contrast_and_selection_against_scipy():
    from scipy.stats import mannwhitneyu

    rows = pd.DataFrame({"feature_id": [1, 1, 2, 2, 3, 4, 5, 6], "H_pos": [1.0, 1.2, 0.8, np.nan, 3.0, 2.5, 2.9, 9.0],
                         "status": ["ok"] * 3 + ["inactive"] + ["ok"] * 4,
                         "kind": ["echo", "echo", "echo", "echo", "topic", "topic", "topic", "filler"]})
    res = locality.kind_contrast(rows)
    assert res["n_latents"] == {"topic": 3, "echo": 2, "filler": 1}
    assert res["median_H_pos"]["echo"] == pytest.approx(np.median([1.1, 0.8]))
    assert res["mann_whitney_p"] == pytest.approx(mannwhitneyu([1.1, 0.8], [3.0, 2.5, 2.9]).pvalue)
    assert res["echo_lower_than_topic"]
    ev = pd.DataFrame({"feature_id": [1, 1, 2, 3, 3], "event_idx": [0, 1, 0, 0, 1], "activation": [1, 1, 9, 2, 1]})
    assert locality.select_latents(ev, 2) == [3, 1]


def test_mann_whitney_power_matches_noether_at_its_sample_size():
    """Noether (1987): n per group = (z_{1-a/2} + z_{power})^2 / (6 (P(X < Y) - 1/2)^2) for equal groups; two
    normal pools shifted by 0.5 sd give P(X < Y) = Phi(0.5 / sqrt 2)."""
    from scipy.stats import norm

    g = np.random.default_rng(0)
    a, b = g.normal(0, 1, 20_000), g.normal(0.5, 1, 20_000)
    p = norm.cdf(0.5 / np.sqrt(2))
    n = int(np.ceil((norm.ppf(0.975) + norm.ppf(0.8)) ** 2 / (6 * (p - 0.5) ** 2)))
    res = locality.mann_whitney_power(a, b, sizes=(n // 4, n, 4 * n), n_sim=600, seed=1)
    assert res["power"][n] == pytest.approx(0.8, abs=0.06)
    assert res["power"][n // 4] < 0.5 and res["power"][4 * n] > 0.99
    assert res["n_for_80pct"] in (n, 4 * n)
    # no difference: the test rejects at its level
    null = locality.mann_whitney_power(a, a, sizes=(n,), n_sim=600, seed=2)
    assert null["power"][n] == pytest.approx(0.05, abs=0.03) and null["n_for_80pct"] is None
