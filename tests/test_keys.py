"""Code fingerprints and node keys: comments/docstrings/layout never count, behaviour always does."""
import textwrap
from pathlib import Path

import pytest

from saeflow.workflow import keys


def _pkg(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    for rel, text in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return src


BASE = {
    "saeflow/__init__.py": '"""pkg"""\n',
    "saeflow/a.py": 'from saeflow import b\n\ndef f(x):\n    """doc"""\n    return b.g(x) + 1\n',
    "saeflow/b.py": "from .c import h\n\ndef g(x):\n    return h(x) * 2\n",
    "saeflow/c.py": "import numpy as np\n\ndef h(x):\n    return x\n",
    "saeflow/d.py": "def unused():\n    return 0\n",
}


def _fp(tmp_path, files, script="from saeflow.a import f\nprint(f(1))\n"):
    src = _pkg(tmp_path, files)
    s = tmp_path / "script.py"
    s.write_text(script)
    return keys.Fingerprinter(src).fingerprint(s)


def test_transitive_imports_followed_and_third_party_ignored(tmp_path):
    fp = _fp(tmp_path, BASE)
    assert set(fp["modules"]) == {"saeflow", "saeflow.a", "saeflow.b", "saeflow.c"}


@pytest.mark.parametrize("edit", [
    lambda s: "# a new comment\n" + s,
    lambda s: s.replace('"""doc"""', '"""a completely different docstring"""'),
    lambda s: s.replace("return b.g(x) + 1", "return (\n        b.g(x)\n        + 1\n    )  # why"),
    lambda s: s + "\n\n\n",
])
def test_comment_docstring_layout_do_not_count(tmp_path, edit):
    before = _fp(tmp_path / "x", BASE)["digest"]
    after = _fp(tmp_path / "y", {**BASE, "saeflow/a.py": edit(BASE["saeflow/a.py"])})["digest"]
    assert before == after


@pytest.mark.parametrize("module", ["saeflow/a.py", "saeflow/b.py", "saeflow/c.py"])
def test_code_edit_anywhere_in_the_import_closure_counts(tmp_path, module):
    before = _fp(tmp_path / "x", BASE)["digest"]
    edited = {**BASE, module: BASE[module].replace("def ", "CONST = 3\n\ndef ", 1)}
    assert _fp(tmp_path / "y", edited)["digest"] != before


def test_module_outside_the_closure_does_not_count(tmp_path):
    before = _fp(tmp_path / "x", BASE)["digest"]
    after = _fp(tmp_path / "y", {**BASE, "saeflow/d.py": "def unused():\n    return 1\n"})["digest"]
    assert before == after


def test_node_key_depends_on_every_part():
    base = dict(step="s", params={"a": 1}, upstream={"u": "k1"}, inputs={"h": "x"}, code_digest="c")
    k = keys.node_key(**base)
    assert len(k) == keys.KEY_CHARS and k == keys.node_key(**base)
    for field, value in [("step", "t"), ("params", {"a": 2}), ("upstream", {"u": "k2"}),
                         ("inputs", {"h": "y"}), ("code_digest", "d")]:
        assert keys.node_key(**{**base, field: value}) != k
    # Key order in params does not matter (canonical JSON).
    assert keys.node_key(**{**base, "params": {"b": 2, "a": 1}}) == keys.node_key(**{**base, "params": {"a": 1, "b": 2}})


def test_job_recomputes_fingerprint_and_rejects_code_changed_after_planning():
    from saeflow.workflow import jobs
    from saeflow.workflow.steps import STEPS

    script = STEPS["recon"].script_path
    src = Path(jobs.__file__).resolve().parents[2]
    fp = keys.Fingerprinter(src).fingerprint(src.parent / script)
    node = {"step": "recon", "key": "k" * 20, "code_digest": fp["digest"], "script": script}
    assert jobs.code_fingerprint(node) == fp and "saeflow.evals.recon" in fp["modules"]
    # The planner and the config checks are not part of any step's code: editing them reruns nothing.
    assert not {"saeflow.workflow.plan", "saeflow.workflow.config", "saeflow.workflow.steps"} & set(fp["modules"])
    with pytest.raises(RuntimeError, match="changed after the DAG was planned"):
        jobs.code_fingerprint({**node, "code_digest": "0" * 64})
