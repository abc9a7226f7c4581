"""Time to plan the DAG (goal: <= 3 s), for two configs, without network:

- `paper`: config/paper.yaml with the slurm profile, the full paper grid (six presets x three datasets x
  all their layers, every eval, figure and published run), as users type it on a cluster;
- `grid`: a synthetic dictionary grid of about 2,000 nodes (two presets x two datasets x ten layers x 25
  dictionaries).

Measures, in one run per config: (a) `build_plan` alone (config validation + keys + fingerprints), in
process; (b) `snakemake -n` wall time end to end (interpreter start, parse, plan, DAG), as users see it.
Writes bench/results/plan.json.
"""
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from saeflow.workflow import config as cfg  # noqa: E402
from saeflow.workflow.plan import build_plan  # noqa: E402


def big_config(n_presets=2, n_datasets=2, n_layers=10, n_dicts=25) -> dict:
    c = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    for section in ("influence", "probe", "autocorr", "geometry"):  # a dictionary grid: dict + recon nodes
        c.pop(section, None)
    c["datasets"] = {f"syn{i}": {"source": "synthetic", "n_docs": 100, "seed": i} for i in range(n_datasets)}
    c["dictionaries"] = {f"d{i}": {"kind": "sparsify-topk", "k": 4 + i} for i in range(n_dicts)}
    base = c["presets"]["t"]
    c["presets"] = {}
    for p in range(n_presets):
        pr = copy.deepcopy(base)
        pr["model"].update(n_layers=n_layers, train_dataset="syn0", seed=p, d_model=64)
        pr.update(layers=list(range(n_layers)), datasets=list(c["datasets"]), dictionaries=list(c["dictionaries"]))
        c["presets"][f"p{p}"] = pr
    return c


def measure(conf: dict, extra: list[str]) -> dict:
    t0 = time.perf_counter()
    plan = build_plan(cfg.validate(copy.deepcopy(conf)), ROOT)
    t_plan = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.yaml"
        path.write_text(yaml.safe_dump(conf))
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(path), *extra],
                             cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        t_dry = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(res.stdout[-2000:] + res.stderr[-3000:])
    n_jobs = next(int(line.split()[1]) for line in res.stdout.splitlines() if line.startswith("total"))
    return {"nodes": len(plan.nodes), "jobs_planned": n_jobs, "build_plan_s": round(t_plan, 3),
            "snakemake_dry_run_s": round(t_dry, 3), "goal_s": 3.0, "meets_goal": t_dry <= 3.0}


def main():
    paper = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    out = {"paper": {"profile": "profiles/slurm", **measure(paper, ["--profile", "profiles/slurm"])},
           "grid": measure(big_config(), [])}
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/plan.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
