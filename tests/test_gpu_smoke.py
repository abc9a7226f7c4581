"""bench/gpu_smoke.py's config (the GPU smoke run needs a GPU; its plan does not): every architecture family
gets a hub-style preset on cuda, the config validates, and the plan reaches every evaluation step on every
preset, on the device the config names."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from saeflow.models.hf import FAMILIES
from saeflow.workflow import config as cfg
from saeflow.workflow.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    import gpu_smoke

    return gpu_smoke.smoke_config(tmp_path_factory.mktemp("assets"), list(FAMILIES), "cuda")


def test_every_family_on_cuda_through_every_step(smoke):
    conf = cfg.validate(smoke)
    assert set(conf["presets"]) == {"t", *(f.replace("-", "") for f in FAMILIES)}
    plan = build_plan(conf, ROOT)
    evals = {"cache_activations", "recon", "entropy_vs_depth", "ctxlen_sweep", "top_contexts", "h_pos", "probe",
             "autocorr", "geometry", "eval_plots", "locality_plots", "publish", "autointerp", "inspect", "inspect_index"}
    for pname in conf["presets"]:
        steps = {n.step for n in plan.nodes.values() if n.labels.get("preset") == pname}
        assert evals <= steps, (pname, evals - steps)
        hub = pname != "t"
        assert ("load_dict" in steps) == hub and ("train_dict" in steps) != hub
    assert [n.labels["preset"] for n in plan.nodes.values() if n.step == "steer"] == ["t"]
    on_gpu = [n for n in plan.nodes.values() if n.params.get("device") is not None]
    assert on_gpu and all(n.params["device"] == "cuda" for n in on_gpu)
    scorers = {n.params["scorer"]["hf_id"] for n in plan.nodes.values() if n.step == "autointerp"}
    assert scorers == {"saeflow-random/qwen3-tiny"}
