"""Bad configs fail at parse time with a message naming the key and the allowed values."""
import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from saeflow.workflow import config as cfg
from saeflow.workflow.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
TINY = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())


SHIPPED = sorted(p.relative_to(ROOT).as_posix() for d in ("config", "tests/configs") for p in (ROOT / d).glob("*.yaml")
                 if p.name != "schema.yaml")


def _validate_here(c: dict) -> dict:
    """validate, except that a `local_dir` missing on this machine (a copy on another) is set to null:
    a shipped config may only fail that check."""
    for _ in range(100):
        try:
            return cfg.validate(copy.deepcopy(c))
        except cfg.ConfigError as e:
            m = re.match(r"config key '([^']+)\.local_dir': .* is not a directory on this machine", str(e))
            if not m:
                raise
            d = c
            for part in m.group(1).split("."):
                d = d[part]
            d["local_dir"] = None
    raise AssertionError("too many local_dir entries")


@pytest.mark.parametrize("rel", SHIPPED)
def test_shipped_configs_validate_and_plan(rel):
    # Every shipped file has no duplicated key (loaded as the Snakefile checks it) and plans.
    assert {"config/config.yaml", "config/paper.yaml", "tests/configs/tiny.yaml"} <= set(SHIPPED)
    from test_steer_configs import USER_PINS

    raw = cfg.load_config_file(ROOT / rel)
    for ds, rev in USER_PINS.get(rel, {}).items():  # a pin the file leaves to the user (and is refused without)
        raw["datasets"][ds]["revision"] = rev
    c = _validate_here(raw)
    assert build_plan(c, ROOT).nodes


def test_defaults_are_filled():
    c = cfg.validate(copy.deepcopy(TINY))
    assert c["presets"]["t"]["site"] == "resid_post"
    assert c["dictionaries"]["topk"]["gates"] == {"max_fvu": 1.0, "max_dead_frac": 1.0, "fail": False}
    assert c["datasets"]["synthetic"]["p_lag"] == 0.15


def _set(path: str, value):
    def mutate(c):
        *parents, last = path.split(".")
        d = c
        for p in parents:
            d = d[p]
        if value is DELETE:
            del d[last]
        else:
            d[last] = value
    return mutate


DELETE = object()
BAD = [
    # (mutation, words the message must contain)
    (_set("presets.t.layers", [5]), ["presets.t.layers", "0..1"]),
    (_set("dictionaries.topk.k", 128), ["dictionaries.topk.k", "d_sae=128"]),
    (_set("presets.t.datasets", ["wikitext"]), ["presets.t.datasets", "allowed values: synthetic"]),
    (_set("dictionaries.topk.kind", "vanilla"), ["dictionaries.topk.kind", "sparsify-topk", "saelens-topk"]),
    (_set("presets.t.site", "resid_mid"), ["presets.t.site", "resid_post", "resid_pre"]),
    (_set("presets.t.dictionaries", ["nope"]), ["presets.t.dictionaries", "allowed values: topk"]),
    (_set("presets.t.model.train_dataset", "nope"), ["presets.t.model.train_dataset", "synthetic"]),
    (_set("datasets.synthetic.source", "ftp"), ["datasets.synthetic.source", "stdlib", "synthetic", "hf"]),
    (_set("cache.dtype", "int8"), ["cache.dtype", "float16"]),
    (_set("dictionaries.topk.kk", 3), ["dictionaries.topk", "kk", "allowed keys"]),
    (_set("windows.ctx_len", 2), ["windows.ctx_len", "minimum"]),
    (_set("presets.t.model.n_heads", 3), ["presets.t.model.n_heads", "d_model=32"]),
    (_set("dictionaries.topk.k", DELETE), ["dictionaries.topk.k", "needs k", "required"]),
    (_set("datasets.synthetic", {"source": "hf", "repo": "a/b", "split": "train"}),
     ["datasets.synthetic", "'revision' is a required property"]),
    (_set("influence.dictionary", "transcoder2"), ["influence.dictionary", "allowed values: topk"]),
    (_set("influence.ctx_lens", [8, 99]), ["influence.ctx_lens", "windows.ctx_len=24"]),
    (_set("influence.n_windows", 99), ["influence.n_windows", "n_eval=16"]),
    (_set("influence.grid_kind", "strip"), ["influence.grid_kind", "violin", "boxplot"]),
    (_set("probe.dictionaries", ["transcoder"]), ["probe.dictionaries", "SAE dictionary", "topk"]),
    (_set("influence", DELETE), ["autocorr", "needs the `influence` section"]),
    (_set("autocorr.density_min", 0.9), ["autocorr.density_min", "density_max"]),
    (_set("geometry.n_permutations", 1), ["geometry.n_permutations", "minimum"]),
    (lambda c: c["presets"].update(store=c["presets"].pop("t")), ["presets.store", "may not be named", "figures"]),
    (_set("publish.tags", "sae"), ["publish.tags", "array"]),
]


@pytest.mark.parametrize("mutate,words", BAD)
def test_bad_config_rejected_with_key_and_allowed_values(mutate, words):
    c = copy.deepcopy(TINY)
    mutate(c)
    with pytest.raises(cfg.ConfigError) as e:
        cfg.validate(c)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_bad_config_fails_snakemake_before_any_job(tmp_path):
    c = copy.deepcopy(TINY)
    c["presets"]["t"]["layers"] = [7]
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(c))
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(p)], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "presets.t.layers" in out and "0..1" in out and "Job stats" not in out
    c["presets"]["t"]["site"] = "bogus"
    p.write_text(yaml.safe_dump(c))
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(p)], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode != 0 and "bogus" in res.stdout + res.stderr and "resid_post" in res.stdout + res.stderr



def test_paper_config_validates_and_plans_the_full_grid():
    paper = cfg.validate(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    plan = build_plan(paper, ROOT)
    steps = [n.step for n in plan.nodes.values()]
    assert steps.count("hf_model") == 6 and steps.count("publish") == 18
    # six presets x three datasets x every listed layer, one pretrained dictionary each
    n_layers = sum(len(p["layers"]) for p in paper["presets"].values())
    assert steps.count("load_dict") == steps.count("recon") == 3 * n_layers == 228
    gemma_entropy = [n for n in plan.nodes.values() if n.step == "entropy_vs_depth" and n.labels["preset"] == "gemma-2-2b"]
    assert gemma_entropy[0].resources["gpu"] == 1 and gemma_entropy[0].resources["gpu_mem_mb"] == 70000
    # Local copies never enter a key; a pinned revision does.
    local = copy.deepcopy(paper)
    local["presets"]["gpt2-small"]["model"]["local_dir"] = "/somewhere/gpt2"
    local["dictionaries"]["gpt2-v5-32k"]["local_dir"] = "/somewhere/saes"
    assert set(build_plan(local, ROOT).nodes) == set(plan.nodes)
    moved = copy.deepcopy(paper)
    moved["presets"]["gpt2-small"]["model"]["revision"] = "0" * 40
    assert set(build_plan(moved, ROOT).nodes) != set(plan.nodes)
