"""The numbers a researcher reads from a finished DAG, checked: a run that completes with numbers that cannot
be right fails. Used on the demo's outputs (tests/test_demo.py, after `make demo`) and on the tiny test DAG
(tests/test_workflow.py), each with its own thresholds: an LM no better than the unigram model, a dictionary
that does not reconstruct, splicing that destroys the model's loss, a probe whose 95% interval reaches
chance, an entropy outside [0, log2 T], the planted locality direction reversed, steering that does not
move the planted topic or a random control that does, a circuit on planted topics no better than random
latent sets.

Each check takes the plan of the config that made the outputs and the directory they were made in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from saeflow.workflow import store


@dataclass(frozen=True)
class Thresholds:
    """What a DAG's outputs must reach. The demo's defaults are what its budgets reach with a margin; the
    tiny test DAG (an LM of 20 steps on 3,600 tokens, 12 probe test items) can only be held to what
    holds by construction (None / False: that part is not checked)."""
    lm_margin_bits: float | None = 1.0  # held-out loss at least this far below the corpus unigram entropy
    max_recon_fvu: float = 0.3          # spliced-in dictionary's FVU on held-out windows
    min_ce_recovered: float = 0.8       # (CE_zero - CE_dict) / (CE_zero - CE_clean)
    probes_above_chance: bool = True    # the 95% Wilson interval of both probes' accuracy lies above 0.5
    circuits_beat_random: bool = True   # on planted topics: circuit gap CI > 0, ablation above every null
    autointerp_beats_control: bool = True  # code corpus: the token baseline beats its shuffled control
    saebench_informative: bool = True   # code corpus: SAEBench's one-vs-rest raw top-1 baseline below 0.9


def is_control(plan, n) -> bool:
    """A node of a control preset (`<preset>-randomized`): its model is re-initialised, so what a trained
    model must reach (thresholds, planted directions) is not asked of it; what holds of any model is."""
    return bool(plan.config["presets"].get(n.labels.get("preset"), {}).get("control"))


def nodes(plan, step: str, controls: bool = True) -> list:
    """The plan's nodes of a step (``controls=False``: without the control presets' nodes)."""
    out = [n for n in plan.nodes.values() if n.step == step and (controls or not is_control(plan, n))]
    assert out, f"the config plans no {step} node"
    return out


def wilson_lo(p: float, n: int, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval of a proportion p on n items."""
    return (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def language_models_beat_the_unigram_model(plan, root: Path, t: Thresholds) -> None:
    if t.lm_margin_bits is None:
        return
    for n in nodes(plan, "train_lm"):
        r = store.read_json(root / n.path / "report.json")
        # A model that learned nothing scores at the unigram entropy.
        assert r["eval_loss_bits"] < r["unigram_entropy_bits"] - t.lm_margin_bits, (n.labels, r)


def dictionaries_reconstruct_and_conversions_are_faithful(plan, root: Path, t: Thresholds) -> None:
    for n in nodes(plan, "train_dict"):
        m = store.read_manifest(root / n.path)
        gates = n.params["gates"]
        assert m["gates"]["fvu"] <= gates["max_fvu"] and m["gates"]["dead_frac"] <= gates["max_dead_frac"], m["gates"]
        if m["fidelity"] is not None:
            assert m["fidelity"]["passed"] and m["fidelity"]["n_differing_tokens"] == 0, m["fidelity"]
    for n in nodes(plan, "recon", controls=False):
        r = store.read_json(root / n.path / "metrics.json")
        fvu = r["fvu"]
        assert 0 <= fvu["value"] < t.max_recon_fvu and fvu["lo"] <= fvu["value"] <= fvu["hi"], (n.labels, fvu)
        # Splicing the dictionary in keeps most of the model's loss; zero-ablating the site is far worse.
        assert r["ce_recovered"]["value"] > t.min_ce_recovered, (n.labels, r["ce_recovered"])
        assert r["ce_dict"]["value"] < r["ce_zero"]["value"], n.labels
        k = plan.nodes[n.upstream["dict"]].params.get("k", np.inf)
        assert 0 < r["l0"]["value"] <= k + 1e-9, (n.labels, r["l0"])


def probes_are_above_chance(plan, root: Path, t: Thresholds) -> None:
    for n in nodes(plan, "probe"):
        df = pd.read_parquet(root / n.path / "probe.parquet")
        full = df[df["k"] == "all"]
        assert len(full) == len(n.params["layers"]) * len(n.params["dictionaries"])
        for row in full.itertuples():
            # Binary tasks: chance is 0.5; the 95% Wilson interval of both probes lies above it.
            if t.probes_above_chance and not is_control(plan, n):
                assert wilson_lo(row.acc_sae, row.n_test) > 0.5 and wilson_lo(row.acc_raw, row.n_test) > 0.5, row
            assert 0 <= row.acc_sae <= 1 and 0 <= row.acc_raw <= 1 and row.n_test > 0, row
            assert row.diff_lo <= row.diff <= row.diff_hi


def entropies_are_in_range(plan, root: Path, t: Thresholds) -> None:
    ctx_len = plan.config["windows"]["ctx_len"]
    for n in nodes(plan, "entropy_vs_depth"):
        for L in n.params["layers"]:
            stem = root / n.path / f"entropy_comparison_{n.params['site']}_layer{L}"
            f, w = pd.read_parquet(f"{stem}.parquet"), pd.read_parquet(f"{stem}_windows.parquet")
            assert len(f) > 0 and len(w) == n.params["n_windows"]
            for h in (f["entropy"], w["token_vector_entropy"]):
                assert h.between(0, math.log2(ctx_len) + 1e-9).all()
    for n in nodes(plan, "h_pos"):
        for L in n.params["layers"]:
            for N in n.params["ctx_lens"]:
                rows = pd.read_parquet(root / n.path / f"layer{L}/ctx{N}.parquet")
                ok = rows[rows["status"] == "ok"]
                assert len(ok) > 0 and ok["H_pos"].between(0, math.log2(N) + 1e-9).all(), (L, N)


def planted_locality_direction_on_synthetic(plan, root: Path, t: Thresholds) -> None:
    """Echo words (fixed by the token 4 back) make latents more local than topic words (broad context)."""
    found = 0
    for n in nodes(plan, "h_pos", controls=False):
        gt = root / n.path / "ground_truth.json"
        if not gt.is_file():
            continue
        for cell, truth in store.read_json(gt).items():
            if "echo_lower_than_topic" in truth:
                found += 1
                assert truth["median_H_pos"]["echo"] < truth["median_H_pos"]["topic"], cell
    assert found > 0, "no planted ground-truth comparison was made"


def steering_moves_the_planted_topic(plan, root: Path, t: Thresholds) -> None:
    """On a planted-topic contrast, the latent or the diff of means raises the target topic's rate with a
    CI above zero at a fluency-preserving alpha; the random-vector control's CI includes zero at its own
    best alpha, and at the latent's alpha its effect is below the latent's CI."""
    found = 0
    for n in nodes(plan, "steer", controls=False):
        s = store.read_json(root / n.path / "summary.json")
        if s["contrast"]["kind"] != "planted_topic":
            continue
        found += 1
        d = s["directions"]
        moved = [k for k in ("latent", "diff_of_means") if d[k]["fluency_ok"] and d[k]["effect_lo"] > 0]
        assert moved, (n.labels, {k: d[k] for k in ("latent", "diff_of_means")})
        rv = d["random_vector"]
        assert rv["effect_lo"] <= 0 <= rv["effect_hi"], (n.labels, rv)
        # The same intervention size along a random direction moves far less: the direction matters.
        # (Its CI at the latent's alpha is recorded too; a perturbation may move a rate a little, so that
        # CI touching zero from above is science, not a check that holds on every machine.)
        best = max(moved, key=lambda k: d[k]["effect"])
        assert rv["effect_at_latent_alpha"] < d[best]["effect_lo"], (n.labels, rv, d[best])
        chosen = next(r for r in s["calibration"]["scan"] if r["group"] == s["calibration"]["chosen"])
        assert 0 < chosen["baseline_success"] < 1, s["calibration"]  # room to move
    assert found > 0, "no planted-topic steering result"


def circuits_beat_random_sets_on_planted_topics(plan, root: Path, t: Thresholds) -> None:
    """Every circuit table is a table of accuracies (0..1, faithfulness = circuit / ceiling) and every
    ablation has its nulls. On a planted-topic task (synthetic corpus) the smallest circuit of the union of
    layers beats same-size random latent sets with a CI above zero, and ablating each layer's smallest
    circuit drops the class margin more than every seeded null set."""
    found = 0
    for n in nodes(plan, "circuit"):
        table = pd.read_parquet(root / n.path / "circuit.parquet")
        abl = pd.read_parquet(root / n.path / "ablation.parquet")
        for c in ("acc_circuit", "acc_random", "acc_ceiling"):
            assert table[c].between(0, 1).all(), (n.labels, c)
        np.testing.assert_allclose(table["faithfulness"], table["acc_circuit"] / table["acc_ceiling"])
        assert (table["gap_lo"] <= table["gap"]).all() and (table["gap"] <= table["gap_hi"]).all()
        assert len(abl) and abl["null"].str.split(",").map(len).eq(n.params["n_null"]).all()
        if not t.circuits_beat_random or plan.config["datasets"][n.labels["dataset"]]["source"] != "synthetic" \
                or is_control(plan, n):
            continue
        found += 1
        k = min(n.params["ks"])
        union = table[(table["scope"] == "union") & (table["k"] == k)].iloc[0]
        assert union["gap_lo"] > 0, (n.labels, union.to_dict())
        smallest = abl[abl["k"] == k]
        assert (smallest["quantile"] == 1.0).all() and (smallest["effect"] > 0).all(), (n.labels, smallest.to_dict())
    assert found > 0 or not t.circuits_beat_random, "no planted-topic circuit result"


def comparisons_agree_with_the_nodes_they_compare(plan, root: Path, t: Thresholds) -> None:
    """Every head-to-head row reads the compared nodes' own headlines (recon metrics.json, probe.parquet's
    acc_sae), its verdict follows from its CI, every pair of arms is there at every layer, and FVU / CE
    recovered are compared only between dictionaries of one site."""
    from saeflow.evals.compare import verdict

    for n in nodes(plan, "compare"):
        table = pd.read_parquet(root / n.path / "compare.parquet")
        arms = n.params["arms"]
        pairs = {(L, arms[i]["label"], arms[j]["label"]) for L in n.params["layers"] for i, j in n.params["pairs"]}
        assert set(table[["layer", "a", "b"]].itertuples(index=False, name=None)) == pairs, n.labels
        assert (table["diff_lo"] <= table["diff"] + 1e-12).all() and (table["diff"] <= table["diff_hi"] + 1e-12).all()
        hib = [None if pd.isna(v) else bool(v) for v in table["higher_is_better"]]
        assert [verdict(r.diff_lo, r.diff_hi, h) for r, h in zip(table.itertuples(), hib)] == table["verdict"].tolist()
        np.testing.assert_allclose(table["diff"], table["value_a"] - table["value_b"], atol=1e-12)
        index = {a["label"]: i for i, a in enumerate(arms)}
        for r in table.itertuples():
            for side, label in (("value_a", r.a), ("value_b", r.b)):
                i = index[label]
                if r.metric in ("fvu", "ce_recovered", "kl"):
                    m = store.read_json(root / plan.nodes[n.upstream[f"recon_L{r.layer}_a{i}"]].path / "metrics.json")
                    assert getattr(r, side) == _approx(m[r.metric]["value"]), (r, side)
                elif r.source == "probe":
                    pr = pd.read_parquet(root / plan.nodes[n.upstream[f"probe_a{i}"]].path / "probe.parquet")
                    acc = pr[(pr["layer"] == r.layer) & (pr["dictionary"] == arms[i]["dictionary"]) & (pr["k"] == r.k)]
                    assert getattr(r, side) == _approx(float(acc["acc_sae"].iloc[0])), (r, side)
                elif r.source == "autointerp":
                    sc = pd.read_parquet(root / plan.nodes[n.upstream[f"autointerp_L{r.layer}_a{i}"]].path /
                                         "latent_scores.parquet")
                    sc = sc[(sc["control"] == "none") & (sc["method"] == r.k) & (sc["task"] == r.metric.split(" ")[0])]
                    assert getattr(r, side) == _approx(float(sc["accuracy"].mean())), (r, side)
            if r.metric in ("fvu", "ce_recovered"):
                assert r.site_a == r.site_b, r


def randomized_controls_destroy_what_the_model_learned(plan, root: Path, t: Thresholds) -> None:
    """A randomized-model control predicts about uniformly (held-out loss within 1 bit of log2 vocab), worse
    than the unigram model and far worse than the trained model it is the control of."""
    controls = [n for n in plan.nodes.values() if n.step == "randomize_lm"]
    assert controls or not any(p.get("controls") for p in plan.config["presets"].values())
    for n in controls:
        r = store.read_json(root / n.path / "report.json")
        assert r["eval_loss_bits"] > r["unigram_entropy_bits"] and abs(r["eval_loss_bits"] - r["uniform_bits"]) < 1, r
        assert r["eval_loss_bits"] > r["base_eval_loss_bits"] + 1, r


def feature_diffs_stand_above_their_null(plan, root: Path, t: Thresholds) -> None:
    """Every feature diff is a table of correlations in [-1, 1] whose unmatched flags follow the threshold,
    and the threshold lies above the shifted-window null's 99th percentile (else a match above it could be
    chance). A trained model against its randomized control: most of the trained dictionary is unmatched."""
    for n in [n for n in plan.nodes.values() if n.step == "feature_diff"]:
        table = pd.read_parquet(root / n.path / "feature_diff.parquet")
        s = store.read_json(root / n.path / "feature_diff.json")
        assert table["max_corr"].between(-1, 1).all() and table["null_max_corr"].between(-1, 1).all()
        assert (table["unmatched"] == (table["live"] & (table["max_corr"] < s["threshold"]))).all()
        a, b = n.params["presets"]
        control = plan.config["presets"][b].get("control") or {}
        for L, sides in s["layers"].items():
            for side, x in sides.items():
                assert x["null_q99"] < s["threshold"], (n.labels, L, side, x["null_q99"])
                if control.get("of") == a and side == "A":
                    assert x["frac_unmatched"] > 0.5, (n.labels, L, x)


def feature_pages_show_what_the_tables_hold(plan, root: Path, t: Thresholds) -> None:
    """Every feature page is one self-contained file (nothing loaded from elsewhere) under 3 MB that shows every
    live latent an analysis chose plus its sample, with the numbers of its node's tables: each latent's
    density and maximum from top_contexts' statistics, each context's peak at the event's activation, each
    explained latent's scores from autointerp; every run's index lists all its pages."""
    import json
    import re

    for n in nodes(plan, "inspect"):
        page = (root / n.path / "features.html").read_text(encoding="utf-8")
        assert len(page.encode()) < 3_000_000, (n.labels, len(page))
        assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=", page), n.labels   # nothing fetched
        data = json.loads(re.search(r"id='page-data'>(.*?)</script>", page, re.DOTALL).group(1))  # "<\/" is JSON's "</"
        L = n.params["layer"]
        events = root / plan.nodes[n.upstream["events"]].path
        stats = pd.read_parquet(events / f"latent_stats_layer{L}.parquet").set_index("feature_id")
        top = pd.read_parquet(events / f"top_contexts_layer{L}.parquet")
        shown = {r["id"]: r for r in data["latents"]}
        assert len(shown) >= min(n.params["n_sample"], int((stats["n_fired"] > 0).sum())), n.labels
        for a, r in shown.items():
            assert stats.loc[a, "n_fired"] > 0 and r["n_fired"] == stats.loc[a, "n_fired"], (n.labels, a)
            assert r["max_act"] == pytest_approx(stats.loc[a, "max_activation"], 1e-3), (n.labels, a)
            ev = top[top["feature_id"] == a].sort_values("event_idx")
            for c, e in zip(r["contexts"], ev.itertuples()):
                assert c["acts"][c["peak"]] == pytest_approx(e.activation, 6e-3) and c["window"] == e.window_idx  # 3 digits
        if "autointerp" in n.upstream:
            scores = pd.read_parquet(root / plan.nodes[n.upstream["autointerp"]].path / "latent_scores.parquet")
            for row in scores[scores["control"] == "none"].itertuples():
                assert shown[row.feature_id]["scores"][row.method][row.task] == pytest_approx(row.accuracy, 6e-3)
    for n in nodes(plan, "inspect_index"):
        html = (root / n.path / "index.html").read_text(encoding="utf-8")
        for role in n.upstream:
            up = plan.nodes[n.upstream[role]]
            assert f"../inspect/{up.labels['dictionary']}_layer{up.labels['layer']}/features.html" in html, role


def autointerp_scores_are_accuracies_with_their_controls(plan, root: Path, t: Thresholds) -> None:
    """Every auto-interp accuracy is a proportion inside its CI, on balanced items, beside its shuffled-explanation
    control and the gap between the two. On a trained model's code corpus (t.autointerp_beats_control), the token
    baseline's detection beats its control for every dictionary and layer (gap CI above 0): token identity
    explains those latents better than another latent's tokens do. (On the synthetic corpus it does not, and
    cannot: the demo's latents there fire on classes of words, the echo latents on many echo words, which three
    listed tokens do not cover; tests/test_autointerp.py shows both cases on planted latents.)"""
    found = 0
    for n in nodes(plan, "autointerp"):
        s = store.read_json(root / n.path / "summary.json")
        items = pd.read_parquet(root / n.path / "scores.parquet")
        for r in s["summary"]:
            assert -1 <= r["lo"] <= r["accuracy"] <= r["hi"] <= 1 and (r["control"] == "gap" or r["lo"] >= 0), (n.labels, r)
        for (method, control, task), g in items.groupby(["method", "control", "task"]):
            assert 2 * g["label"].sum() == len(g), (n.labels, method, control, task)   # balanced
        assert {r["control"] for r in s["summary"]} == {"none", "shuffled", "gap"}
        if not t.autointerp_beats_control or is_control(plan, n) or \
                plan.config["datasets"][n.labels["dataset"]]["source"] == "synthetic":
            continue
        found += 1
        gap = next(r for r in s["summary"] if (r["method"], r["control"], r["task"], r["group"]) ==
                   ("token", "gap", "detection", "all"))
        assert gap["lo"] > 0, (n.labels, gap)
    assert found > 0 or not t.autointerp_beats_control, "no auto-interp of a trained model on a code corpus"


def the_ledger_reads_every_eval_and_its_verdicts_follow_the_rule(plan, root: Path, t: Thresholds) -> None:
    """The results ledger has a row for every eval node's headline (every recon node's variance explained equal to its
    metrics.json), every row's CI holds its value, and every verdict is the rule's for the config's references."""
    from saeflow.report import ledger

    (n,) = nodes(plan, "ledger")
    df = pd.read_parquet(root / n.path / "ledger.parquet")
    assert set(df["key"]) == {plan.nodes[k].key for r, k in n.upstream.items() if r.startswith("e")}
    refs = n.params["references"]
    for r in df.to_dict(orient="records"):
        assert r["lo"] <= r["value"] + 1e-12 and r["value"] <= r["hi"] + 1e-12, r
        row = {**r, "dataset": r["dataset_name"]}
        assert r["verdict"] == ledger.verdict(r["value"], r["lo"], r["hi"], ledger.reference_for(row, refs)), r
        if r["eval"] == "recon":
            m = store.read_json(root / plan.nodes[r["key"]].path / "metrics.json")
            assert r["value"] == _approx(m["ev"]["value"]) and r["l0"] == _approx(m["l0"]["value"]), r
    assert (root / plan.data_root / "LEDGER.md").read_text() == (root / n.path / "LEDGER.md").read_text()


def saebench_tasks_are_saebench_shaped_and_informative(plan, root: Path, t: Thresholds) -> None:
    """Every saebench task reports SAEBench's metrics as accuracies with the top-1 CIs around them, over at least two
    classes of balanced items; on a trained model's code corpus (t.saebench_informative) the raw top-1 baseline stays
    below 0.9, so that an SAE can be seen to beat it or not (the binary probe is at 0.97-1.0 for both)."""
    found = 0
    for n in nodes(plan, "saebench"):
        s = store.read_json(root / n.path / "summary.json")
        table = pd.read_parquet(root / n.path / "saebench.parquet")
        assert len(s["classes"]) >= 2 and set(table["class"]) == set(s["classes"]), n.labels
        assert (table["n_train"] == s["train_size"]).all() and (table["n_test"] == s["test_size"]).all()
        assert table["accuracy"].between(0, 1).all()
        for r in s["results"]:
            for name in ("sae_top_1", "llm_top_1"):
                lo, hi = r[f"{name}_ci"]
                assert lo <= r[f"{name}_test_accuracy"] + 1e-12 and r[f"{name}_test_accuracy"] <= hi + 1e-12, (n.labels, r)
            if t.saebench_informative and not is_control(plan, n) and \
                    plan.config["datasets"][n.labels["dataset"]]["source"] == "stdlib":
                found += 1
                assert r["llm_top_1_test_accuracy"] < 0.9, (n.labels, r)
    assert found > 0 or not t.saebench_informative, "no saebench task on a code corpus"


def pytest_approx(v: float, rel: float):
    import pytest

    return pytest.approx(float(v), rel=rel, abs=1e-6)


def _approx(v: float):
    import pytest

    return pytest.approx(v, rel=1e-9, abs=1e-12)


CHECKS = (language_models_beat_the_unigram_model, dictionaries_reconstruct_and_conversions_are_faithful,
          probes_are_above_chance, entropies_are_in_range, planted_locality_direction_on_synthetic,
          steering_moves_the_planted_topic, circuits_beat_random_sets_on_planted_topics,
          comparisons_agree_with_the_nodes_they_compare, randomized_controls_destroy_what_the_model_learned,
          feature_diffs_stand_above_their_null, feature_pages_show_what_the_tables_hold,
          autointerp_scores_are_accuracies_with_their_controls,
          the_ledger_reads_every_eval_and_its_verdicts_follow_the_rule,
          saebench_tasks_are_saebench_shaped_and_informative)
