"""Bad configs fail at parse time with a message naming the key and the allowed values."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from saeflow import config as cfg
from saeflow.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
TINY = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())


def test_shipped_configs_validate_and_plan():
    for c in (DEFAULT, TINY):
        c = cfg.validate(copy.deepcopy(c))
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
    (_set("dictionaries.topk.k", DELETE), ["dictionaries.topk", "'k' is a required property"]),
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

