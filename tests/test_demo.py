"""The outputs of `make demo` as a researcher reads them (run by .ci/run after `make demo`: `pytest -m demo`).

These tests read this checkout's `data/` and `figures/`, planned from the embedded default config, and
fail when a figure is missing or when the DAG completed with numbers that cannot be right: an LM no better
than the unigram model, a dictionary that does not reconstruct, a probe at chance, an entropy outside
[0, log2 T]. They are deselected in `make test` (pyproject: -m "not demo"), because they need the demo's
outputs; `make demo && pytest -m demo` runs them.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from saeflow.workflow import config as cfg
from saeflow.workflow import store
from saeflow.workflow.plan import build_plan

pytestmark = pytest.mark.demo
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plan():
    conf = cfg.validate(copy.deepcopy(yaml.safe_load((ROOT / "config" / "config.yaml").read_text())))
    return build_plan(conf, ROOT)


def nodes(plan, step):
    out = [n for n in plan.nodes.values() if n.step == step]
    assert out, f"the demo plans no {step} node"
    return out


def art(node) -> Path:
    return ROOT / node.path


def wilson_lo(p: float, n: int, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval of a proportion p on n items."""
    return (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def test_every_planned_artefact_exists_and_verifies(plan):
    missing = [n.path for n in plan.nodes.values() if not store.is_complete(art(n))]
    assert missing == [], f"{len(missing)} planned artefacts missing after make demo"
    corrupt = {n.path: p for n in plan.nodes.values() if (p := store.verify_artefact(art(n)))}
    assert corrupt == {}


def test_every_documented_figure_exists(plan):
    readme = (ROOT / "README.md").read_text()
    exported = {Path(p).name for p in plan.exports if p.endswith(".png")}
    for path in plan.exports:
        f = ROOT / path
        assert f.is_file(), f"{path} missing"
        if path.endswith(".png"):
            assert f.stat().st_size > 10_000, f"{path} is suspiciously small"
    # Every figure the README names (with the demo's presets and datasets filled in) is one of them.
    names = set(re.findall(r"figures/([\w-]+(?:\.[\w-]+)*\.png)", readme))  # placeholders (<p>, ...) excluded
    assert names and names <= exported, f"README names figures the demo does not make: {names - exported}"
    for pattern in ("entropy_vs_depth__{p}__{d}.png", "probe__{p}__{d}.png", "autocorr__{p}__{d}.png",
                    "geometry__{p}__{d}.png"):
        for pname, preset in plan.config["presets"].items():
            for ds in preset["datasets"]:
                assert pattern.format(p=pname, d=ds) in exported
    assert (ROOT / "figures" / "entropy_vs_depth_grid.png").is_file()


def test_language_models_beat_the_unigram_model(plan):
    for n in nodes(plan, "lm"):
        r = store.read_json(art(n) / "report.json")
        # A model that learned nothing scores at the unigram entropy; the demo's are well below it.
        assert r["eval_loss_bits"] < r["unigram_entropy_bits"] - 1.0, (n.labels, r)


def test_dictionaries_reconstruct_and_conversions_are_faithful(plan):
    for n in nodes(plan, "dict"):
        m = store.read_manifest(art(n))
        gates = n.params["gates"]
        assert m["gates"]["fvu"] <= gates["max_fvu"] and m["gates"]["dead_frac"] <= gates["max_dead_frac"], m["gates"]
        if m["fidelity"] is not None:
            assert m["fidelity"]["passed"] and m["fidelity"]["n_differing_tokens"] == 0
    for n in nodes(plan, "recon"):
        r = store.read_json(art(n) / "metrics.json")
        assert 0 <= r["fvu"]["value"] < 0.3 and r["fvu"]["lo"] <= r["fvu"]["value"] <= r["fvu"]["hi"], (n.labels, r["fvu"])
        # Splicing the dictionary in keeps most of the model's loss (CE_zero is far worse).
        assert r["ce_recovered"]["value"] > 0.8 and r["ce_dict"]["value"] < r["ce_zero"]["value"], n.labels
        assert 0 < r["l0"]["value"] <= plan.nodes[n.upstream["dict"]].params.get("k", np.inf) + 1e-9


def test_probes_are_above_chance(plan):
    for n in nodes(plan, "probe"):
        df = pd.read_parquet(art(n) / "probe.parquet")
        full = df[df["k"] == "all"]
        assert len(full) == len(n.params["layers"]) * len(n.params["dictionaries"])
        for row in full.itertuples():
            # Binary tasks: chance is 0.5; the 95% Wilson interval of both probes lies above it.
            assert wilson_lo(row.acc_sae, row.n_test) > 0.5 and wilson_lo(row.acc_raw, row.n_test) > 0.5, row
            assert row.diff_lo <= row.diff <= row.diff_hi


def test_entropies_are_in_range(plan):
    ctx_len = plan.config["windows"]["ctx_len"]
    for n in nodes(plan, "entropy"):
        for L in n.params["layers"]:
            stem = art(n) / f"entropy_comparison_{n.params['site']}_layer{L}"
            f, w = pd.read_parquet(f"{stem}.parquet"), pd.read_parquet(f"{stem}_windows.parquet")
            assert len(f) > 0 and len(w) == n.params["n_windows"]
            for h in (f["entropy"], w["token_vector_entropy"]):
                assert h.between(0, math.log2(ctx_len) + 1e-9).all()
    for n in nodes(plan, "h_pos"):
        for L in n.params["layers"]:
            for N in n.params["ctx_lens"]:
                rows = pd.read_parquet(art(n) / f"layer{L}/ctx{N}.parquet")
                ok = rows[rows["status"] == "ok"]
                assert len(ok) > 0 and ok["H_pos"].between(0, math.log2(N) + 1e-9).all(), (L, N)


def test_planted_locality_direction_on_synthetic(plan):
    """Echo words (fixed by the token 4 back) make latents more local than topic words (broad context)."""
    found = 0
    for n in nodes(plan, "h_pos"):
        gt = art(n) / "ground_truth.json"
        if not gt.is_file():
            continue
        for cell, t in store.read_json(gt).items():
            if "echo_lower_than_topic" in t:
                found += 1
                assert t["median_H_pos"]["echo"] < t["median_H_pos"]["topic"], cell
    assert found > 0, "no planted ground-truth comparison was made"
