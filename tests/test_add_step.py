"""README "How to add a step" stays true: this test follows its numbered list in a temporary copy of the
workflow, adding a toy step `token_count` (the number of non-BOS tokens of each split's windows), and runs
it through Snakemake."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from saeflow.workflow import store
from test_workflow import CONFIG, copy_workflow, planned, run

pytestmark = pytest.mark.workflow
ROOT = Path(__file__).resolve().parents[1]

# What each numbered item of the README's list must name (the files this test edits, in order).
ITEMS = ["src/saeflow/<stage>/", "src/saeflow/workflow/steps.py", "workflow/scripts/<name>.py",
         "rules/<stage>.smk", "src/saeflow/workflow/plan.py", "tests/test_steps.py"]

LIBRARY = '''"""Token counts of windows (the toy step of tests/test_add_step.py)."""

import numpy as np


def token_count(tokens: np.ndarray, bos_id: int) -> int:
    """Number of tokens that are not BOS."""
    return int((np.asarray(tokens) != bos_id).sum())
'''

SCRIPT = '''"""Rule token_count: non-BOS tokens of each split's windows."""
from safetensors.numpy import load_file

from saeflow.evals.token_count import token_count
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
win = load_file(str(inputs["windows"] / "windows.safetensors"))
bos = store.read_manifest(inputs["windows"])["bos_id"]
with store.write_artefact(out, node) as art:
    counts = {split: token_count(win[f"{split}_tokens"], bos) for split in ("train", "eval")}
    store.write_json_atomic(art.path("counts.json"), counts)
'''

RULE = '''

# non-BOS tokens of each split's windows
rule token_count:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/token_count/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/token_count/{{key}}.log",
    benchmark:
        f"{BENCH}/token_count/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/token_count.py"
'''


def readme_list() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("How to add a step", 1)[1].split("\n\n", 2)[1]
    return [m.group(1) for m in re.finditer(r"^\d+\. (.*?)(?=^\d+\. |\Z)", block, re.M | re.S)]


def test_the_readme_list_names_what_this_test_does():
    items = readme_list()
    assert len(items) == len(ITEMS)
    for item, path in zip(items, ITEMS):
        assert path in item.replace("\n   ", " "), (path, item)


def test_a_new_step_following_the_list_runs(tmp_path):
    wd = copy_workflow(tmp_path)
    for rel in ("tests/test_steps.py",):  # item 6 runs the registry test there
        (wd / rel).write_text((ROOT / rel).read_text())
    # 1. the library
    (wd / "src/saeflow/evals/token_count.py").write_text(LIBRARY)
    # 2. the registry
    steps = wd / "src/saeflow/workflow/steps.py"
    s = steps.read_text()
    anchor = '    Step("geometry", "evals",'
    steps.write_text(s.replace(anchor, '    Step("token_count", "evals", "non-BOS tokens of each split\'s windows"),\n' + anchor))
    # 3. the script
    (wd / "workflow/scripts/token_count.py").write_text(SCRIPT)
    # 4. the rule
    rules = wd / "rules/evals.smk"
    rules.write_text(rules.read_text() + RULE)
    # 5. the plan
    plan = wd / "src/saeflow/workflow/plan.py"
    p = plan.read_text()
    anchor = "            win = windows_for(ds)\n"
    assert anchor in p
    plan.write_text(p.replace(anchor, anchor + '            plan.add("token_count", {}, {"windows": win}, {"preset": pname, "dataset": ds})\n'))
    # 6. the checks
    assert planned(wd, "--until", "token_count").get("token_count") == 1
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_steps.py"],
                         cwd=wd, capture_output=True, text=True, env={"PYTHONPATH": str(wd / "src"), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stdout[-3000:]
    run(wd, "--until", "token_count")
    arts = list((wd / "data/store/token_count").iterdir())
    assert len(arts) == 1 and store.verify_artefact(arts[0]) == []
    counts = store.read_json(arts[0] / "counts.json")
    cfg = __import__("yaml").safe_load((wd / CONFIG).read_text())["windows"]
    assert counts == {"train": cfg["n_train"] * (cfg["ctx_len"] - 1), "eval": cfg["n_eval"] * (cfg["ctx_len"] - 1)}
