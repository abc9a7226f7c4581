"""One name and one declaration per step: the registry (saeflow.workflow.steps), the rules, the scripts, the
store folders, the schema's resource names, the Snakefile's localrules and the published layout agree."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from saeflow.workflow import config as cfg
from saeflow.workflow.plan import build_plan
from saeflow.workflow.steps import KEYED, LOCAL, STAGES, STEPS

ROOT = Path(__file__).resolve().parents[1]
RULE = re.compile(r"^[ \t]*rule (\w+):\n(.*?)(?=^[ \t]*rule |\Z)", re.M | re.S)


def rules() -> dict[str, tuple[str, str]]:
    """{rule name: (stage file, its text)} over rules/*.smk."""
    out = {}
    for f in sorted((ROOT / "rules").glob("*.smk")):
        text = f.read_text()
        for m in RULE.finditer(text):
            assert m.group(1) not in out, f"rule {m.group(1)} defined twice"
            out[m.group(1)] = (f.stem, m.group(2))
    return out


def test_every_rule_is_a_registry_step_and_back():
    found = rules()
    assert set(found) == set(STEPS), (set(found) ^ set(STEPS))
    assert {f.stem for f in (ROOT / "rules").glob("*.smk")} == set(STAGES) | {"common"}


def test_one_name_for_rule_script_store_logs_and_stage():
    for name, (stage, text) in rules().items():
        s = STEPS[name]
        assert stage == s.stage, f"rule {name} is in rules/{stage}.smk, the registry says {s.stage}"
        if s.script:
            assert f'"../workflow/scripts/{name}.py"' in text, name
            assert (ROOT / s.script_path).is_file(), s.script_path
        if s.keyed:
            assert f'f"{{STORE}}/{name}/{{{{key}}}}/{{MANIFEST}}"' in text, f"rule {name}: output not in store/{name}/"
            assert f'f"{{LOGS}}/{name}/{{{{key}}}}.log"' in text and f'f"{{BENCH}}/{name}/{{{{key}}}}.tsv"' in text
            assert ('gpu=res("gpu")' in text) == s.gpu, f"rule {name}: gpu resource vs registry"
        assert ("localrule: True" in text) == (s.local and name not in LOCAL_IN_SNAKEFILE), name
    scripts = {p.stem for p in (ROOT / "workflow" / "scripts").glob("*.py")}
    assert scripts == {n for n, s in STEPS.items() if s.script}, "a script without a registry entry (or back)"


# sync_push is defined only when the config has a `sync` section, so it marks itself local in its rule.
LOCAL_IN_SNAKEFILE = set(LOCAL) - {"sync_push"}


def test_snakefile_takes_localrules_from_the_registry():
    text = (ROOT / "Snakefile").read_text()
    assert "workflow.localrules(\"all\", *(name for name in LOCAL_STEPS if name != \"sync_push\"))" in text
    assert "localrules:" not in text


def test_the_plan_uses_only_registered_steps_and_their_resources():
    plan = build_plan(cfg.validate(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())), ROOT)
    for n in plan.nodes.values():
        assert n.step in KEYED and n.path.split("/")[-2] == n.step
        assert n.to_dict()["script"] == STEPS[n.step].script_path
        assert n.resources["gpu"] == int(STEPS[n.step].gpu)  # every paper preset runs on cuda


def test_config_resources_are_keyed_by_registered_steps():
    import copy

    import pytest

    tiny = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
    for name in KEYED:
        cfg.validate({**copy.deepcopy(tiny), "resources": {name: {"mem_mb": 100}}})
    with pytest.raises(cfg.ConfigError, match=r"config key 'resources.lm': not a step; allowed values: corpus, "):
        cfg.validate({**copy.deepcopy(tiny), "resources": {"lm": {"mem_mb": 100}}})
    bad = copy.deepcopy(tiny)
    bad["presets"]["t"]["resources"] = {"dict": {"mem_mb": 100}}
    with pytest.raises(cfg.ConfigError, match=r"config key 'presets.t.resources.dict': not a step"):
        cfg.validate(bad)


def test_published_steps_have_a_folder_and_the_rest_none():
    for name, s in STEPS.items():
        assert (s.publish is None) or (s.keyed and s.publish == name), name
        assert not s.publish_top or s.publish


def test_library_imports_flow_one_way():
    """saeflow.<stage> never imports a later stage, and nothing in the library imports Snakemake."""
    order = {"tensors": -1, "workflow": 0, "data": 1, "models": 2, "dictionaries": 3, "evals": 4, "report": 5,
             "hub": 6, "cli": 7}
    bad = []
    for f in (ROOT / "src" / "saeflow").rglob("*.py"):
        rel = f.relative_to(ROOT / "src" / "saeflow").with_suffix("")
        here = rel.parts[0]
        text = f.read_text()
        assert not re.search(r"^\s*(import|from) snakemake", text, re.M), f
        for m in re.finditer(r"^\s*from saeflow\.(\w+)", text, re.M):
            there = m.group(1)
            # workflow.plan and workflow.config read corpus identities and names: the one exception, data is
            # pure functions of config values (no store, no model).
            if order.get(there, 0) > order.get(here, 0) and not (here == "workflow" and there == "data"):
                bad.append(f"{rel} imports saeflow.{there}")
    assert bad == []


def test_library_has_no_import_cycles():
    code = ("import importlib, pkgutil, saeflow\n"
            "for m in pkgutil.walk_packages(saeflow.__path__, 'saeflow.'): importlib.import_module(m.name)\n"
            "print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert res.stdout.strip() == "ok", res.stderr[-2000:]
