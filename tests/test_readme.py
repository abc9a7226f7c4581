"""Every command the README shows in a code block is run, exactly as written, by a test: each test module
that runs some lists them in README_COMMANDS (and runs each through readme.run_readme_command, which refuses
a command the README does not show); `make demo` and `make test` are what .ci/run runs."""
from __future__ import annotations

from pathlib import Path

from readme import readme_commands

ROOT = Path(__file__).resolve().parents[1]
RUN_BY_CI = ["make test", "make demo"]


def test_every_readme_command_is_run_by_a_test():
    import test_dictionary_repo
    import test_slurm_profile
    import test_sync
    import test_workflow

    declared = {c: mod.__name__ for mod in (test_workflow, test_sync, test_slurm_profile, test_dictionary_repo)
                for c in mod.README_COMMANDS}
    declared.update({c: ".ci/run" for c in RUN_BY_CI})
    shown = readme_commands()
    assert set(shown) - set(declared) == set(), "README commands no test runs"
    assert set(declared) - set(shown) == set(), "tests run commands the README no longer shows"


def test_ci_runs_the_two_commands():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for cmd in RUN_BY_CI:
        assert cmd in ci
