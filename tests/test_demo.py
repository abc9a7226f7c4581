"""The outputs of `make demo` as a researcher reads them (run by .ci/run after `make demo`: `pytest -m demo`).

These tests read this checkout's `data/` and `figures/`, planned from the embedded default config, and
fail when a figure is missing or when the DAG completed with numbers that cannot be right: an LM no better
than the unigram model, a dictionary that does not reconstruct, a probe at chance, an entropy outside
[0, log2 T] (the checks are tests/science.py's, which test_workflow.py also applies to the tiny DAG with
the thresholds it can reach). They are deselected in `make test` (pyproject: -m "not demo"), because they need the demo's
outputs; `make demo && pytest -m demo` runs them.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import science
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


def test_every_planned_artefact_exists_and_verifies(plan):
    missing = [n.path for n in plan.nodes.values() if not store.is_complete(ROOT / n.path)]
    assert missing == [], f"{len(missing)} planned artefacts missing after make demo"
    corrupt = {n.path: p for n in plan.nodes.values() if (p := store.verify_artefact(ROOT / n.path))}
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


DEMO = science.Thresholds()


@pytest.mark.parametrize("check", science.CHECKS, ids=lambda c: c.__name__)
def test_the_numbers_a_researcher_reads(plan, check):
    check(plan, ROOT, DEMO)
