"""envs/*.yaml mirror the pins of pyproject.toml."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_conda_env_mirrors_pyproject_pins():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {re.split(r"[=<>]", d)[0].lower(): d for d in deps}
    env = yaml.safe_load((ROOT / "envs" / "saeflow.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = {re.split(r"[=<>]", d)[0].lower(): d for d in pip if not d.startswith("--")}
    assert env_pins == pins
