"""saeflow.evals.feature_diff against numpy references and a planted diff: B holds A's latents permuted and
rescaled except a few it lacks, which must come out unmatched with a large asymmetry ratio."""
import numpy as np
import pytest
import torch

from saeflow.evals import feature_diff as fd


def sparse_codes(g, n, d, p=0.2):
    return np.where(g.random((n, d)) < p, g.gamma(2.0, 1.0, (n, d)), 0.0)


def test_running_correlation_equals_numpy_corrcoef():
    g = np.random.default_rng(0)
    a, b = sparse_codes(g, 500, 7), sparse_codes(g, 500, 5)
    b[:, 2] = 0.0   # a dead latent of B
    a[:, 4] = 1.5   # a constant latent of A
    cc = fd.CodeCorrelation(7, 5)
    for s in range(0, 500, 128):  # chunks, as batches of windows arrive
        cc.update(torch.as_tensor(a[s:s + 128]), torch.as_tensor(b[s:s + 128]))
    corr, live_a, live_b = cc.result()
    assert live_a.tolist() == [True] * 4 + [False, True, True] and live_b.tolist() == [True, True, False, True, True]
    ref = np.corrcoef(a.T, b.T)[:7, 7:]
    ok = live_a[:, None] & live_b[None, :]
    np.testing.assert_allclose(corr[ok], ref[ok], atol=1e-10)
    assert (corr[~ok] == 0).all()


def test_decoder_cosine_match_is_the_brute_force_maximum():
    g = np.random.default_rng(1)
    wa, wb = g.normal(size=(6, 4)), g.normal(size=(9, 4))
    j, v = fd.decoder_cosine_match(wa, wb)
    cos = np.array([[x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in wb] for x in wa])
    np.testing.assert_array_equal(j, cos.argmax(1))
    np.testing.assert_allclose(v, cos.max(1), atol=1e-12)


@pytest.fixture(scope="module")
def planted():
    """A: 40 latents over 4000 tokens. B: A's latents 0..31 permuted and scaled by 2 (plus a little noise),
    and 8 latents of its own, independent of A; A's latents 32..39 are absent from B."""
    g = np.random.default_rng(2)
    n, d_a = 4000, 40
    a = sparse_codes(g, n, d_a)
    perm = g.permutation(32)
    b = np.concatenate([2.0 * a[:, :32][:, perm] + 0.01 * g.random((n, 32)), sparse_codes(g, n, 8)], 1)
    return a, b, perm


def test_planted_diff_matches_the_shared_latents_and_flags_the_missing(planted):
    a, b, perm = planted
    cc = fd.CodeCorrelation(a.shape[1], b.shape[1])
    cc.update(torch.as_tensor(a), torch.as_tensor(b))
    corr, _, live_b = cc.result()
    j, v = fd.best_match(corr, live_b)
    inv = np.argsort(perm)  # B's column of A's latent i (i < 32)
    np.testing.assert_array_equal(j[:32], inv)
    assert (v[:32] > 0.99).all() and (v[32:] < 0.2).all()
    stats = fd.FiringStats(j, top_k=3)
    for s in range(0, len(a), 1000):
        stats.update(torch.as_tensor(a[s:s + 1000]), torch.as_tensor(b[s:s + 1000]), s)
    r = stats.result()
    # shared latents: B's copy fires twice as strongly on the same tokens; missing ones: B barely fires there
    np.testing.assert_allclose(r["asymmetry"][:32], 0.5, rtol=0.02)
    assert (r["asymmetry"][32:] > 2.0).all()
    # the sums and top-k are the brute-force ones
    fires = a > 0
    np.testing.assert_allclose(r["mean_act"], (a * fires).sum(0) / fires.sum(0))
    np.testing.assert_allclose(r["mean_act_match"], (b[:, j] * fires).sum(0) / fires.sum(0))
    np.testing.assert_array_equal(r["n_firing"], fires.sum(0))
    for i in (0, 17, 39):
        top = np.argsort(-a[:, i], kind="stable")[:3]
        np.testing.assert_array_equal(r["top_tokens"][i], top)
        np.testing.assert_allclose(r["top_values"][i], a[top, i])


def test_misaligned_null_stays_far_below_the_planted_matches(planted):
    a, b, _ = planted
    cc = fd.CodeCorrelation(a.shape[1], b.shape[1])
    cc.update(torch.as_tensor(a), torch.as_tensor(np.roll(b, 1, axis=0)))
    corr, _, live_b = cc.result()
    _, v = fd.best_match(corr, live_b)
    assert np.quantile(v, 0.99) < 0.2


def test_codes_of_different_tokens_are_refused():
    cc = fd.CodeCorrelation(3, 3)
    with pytest.raises(ValueError, match="same tokens"):
        cc.update(torch.zeros(4, 3), torch.zeros(5, 3))


def _config(**extra):
    import copy
    from pathlib import Path

    import yaml

    conf = yaml.safe_load((Path(__file__).parent / "configs" / "tiny.yaml").read_text())
    conf["presets"]["t"]["controls"] = ["randomized"]
    conf["feature_diff"] = {"pairs": [["t", "t-randomized"]], "dictionary": "topk", "n_windows": 8}
    for k, v in extra.items():
        conf[k] = v
    return copy.deepcopy(conf)


def test_feature_diff_is_planned_on_the_shared_windows():
    from pathlib import Path

    from saeflow.workflow import config as cfg
    from saeflow.workflow.plan import build_plan

    plan = build_plan(cfg.validate(_config()), Path(__file__).resolve().parents[1])
    (node,) = [n for n in plan.nodes.values() if n.step == "feature_diff"]
    step_of = {k: plan.nodes[v].step for k, v in node.upstream.items()}
    assert step_of == {"lm_a": "train_lm", "lm_b": "randomize_lm", "windows": "windows", "dict_a_L1": "train_dict",
                       "dict_b_L1": "train_dict"}
    assert plan.nodes[node.upstream["dict_b_L1"]].labels["preset"] == "t-randomized"
    assert node.params["presets"] == ["t", "t-randomized"] and node.params["layers"] == [1]
    assert "figures/feature_diff__t__t-randomized__synthetic.png" in plan.exports


@pytest.mark.parametrize("edit,key", [
    (lambda c: c["feature_diff"].update(pairs=[["t", "nope"]]), "feature_diff.pairs"),
    (lambda c: c["feature_diff"].update(pairs=[["t", "t"]]), "feature_diff.pairs"),
    (lambda c: c["feature_diff"].update(dictionary="nope"), "feature_diff.dictionary"),
    (lambda c: c["feature_diff"].update(n_windows=10_000), "feature_diff.n_windows"),
])
def test_bad_pairs_are_refused_naming_the_key(edit, key):
    from saeflow.workflow import config as cfg

    conf = _config()
    edit(conf)
    with pytest.raises(cfg.ConfigError, match=key.replace(".", r"\.")):
        cfg.validate(conf)


def test_presets_of_other_windows_are_refused():
    import copy
    from pathlib import Path

    from saeflow.workflow import config as cfg
    from saeflow.workflow.plan import build_plan

    conf = _config()
    conf["presets"]["u"] = copy.deepcopy(conf["presets"]["t"])
    del conf["presets"]["u"]["controls"]
    conf["presets"]["u"]["model"]["vocab_size"] = 420  # another tokenizer: other windows
    conf["feature_diff"]["pairs"] = [["t", "u"]]
    with pytest.raises(cfg.ConfigError, match="different windows"):
        build_plan(cfg.validate(conf), Path(__file__).resolve().parents[1])
