"""GPU smoke: the whole DAG with `device: cuda` on tiny hub-style presets of every architecture family.

In a temporary copy of the workflow, one preset per family of ``saeflow.models.hf.FAMILIES`` (a randomly
initialised tiny Hugging Face model saved locally, ``saeflow.models.random_models``) with two pretrained
dictionaries at layer 1 (a sae-lens JumpReLU and a sparsify TopK, ``saeflow.dictionaries.tiny``, loaded by
their real loaders), plus the embedded preset of the tiny test config (trained LM and three trained
dictionaries), all with ``device: <device>``, run through every step: cache, train/load with the fidelity
check, recon, influence (entropy vs depth, ctx sweep, top contexts, H_pos), probe, steering (the
embedded preset), auto-interp (a random tiny Qwen3 as explainer and scorer on the GPU), feature pages, autocorr,
geometry, figures and publish. Then ``saeflow verify`` on the store.

Writes bench/results/gpu_smoke_<device>.json: the device, library versions, wall seconds and job count of
the DAG, each recon node's FVU / L0 / CE recovered, each conversion's fidelity counts, the slowest steps
(from the rules' `benchmark:` files), and whether the store verifies. Exits non-zero when the DAG or
verify fails.

    python bench/gpu_smoke.py [--device cuda] [--families gpt2,llama] [--cores 8]

(bench/gpu_smoke.sh runs this and the influence benchmark on a GPU machine without network.)
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, write_result

LAYER = 1


def workflow_copy(dst: Path) -> Path:
    """The workflow files a run needs, copied as the workflow tests copy them (one list: test_workflow.COPY)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_workflow import copy_workflow

    return copy_workflow(dst)


def smoke_config(assets: Path, families: list[str], device: str) -> dict:
    """The tiny test config with its embedded preset on `device`, and one hub-style preset per family."""
    import yaml

    from saeflow.dictionaries import tiny
    from saeflow.models import random_models

    cfg = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    embedded = cfg["presets"]["t"]
    cfg["presets"] = {"t": {**embedded, "device": device, "influence_dictionary": cfg["influence"].pop("dictionary")}}
    probed = list(cfg["probe"]["dictionaries"])
    for i, family in enumerate(families):
        name = re.sub(r"\W", "", family)
        spec = random_models.random_model(family, assets / name, size="tiny", seed=i)
        d_in, hook = spec["d_model"], f"blocks.{LAYER}.hook_resid_post"
        sl, sp = f"sl_{name}", f"sp_{name}"
        tiny.write_tiny("saelens", assets / sl, LAYER, d_in, 4 * d_in, hook, seed=10 + i, architecture="jumprelu")
        tiny.write_tiny("sparsify", assets / sp, LAYER, d_in, 4 * d_in, hook, seed=20 + i, k=8)
        cfg["presets"][name] = {
            "model": {"source": "hf", "hf_id": spec["hf_id"], "revision": spec["revision"][:40],
                      "local_dir": spec["local_dir"], "tl_name": spec["tl_name"], "n_layers": spec["n_layers"],
                      "d_model": d_in, "processing": "none"},
            "layers": [LAYER], "datasets": ["synthetic"], "dictionaries": [sl, sp], "influence_dictionary": sl,
            "device": device}
        # Random dictionaries do not reconstruct: their gates are recorded, not enforced.
        gates = {"max_fvu": 1.0e9, "max_dead_frac": 1.0, "fail": False}
        cfg["dictionaries"][sl] = {"kind": "pretrained", "format": "saelens", "release": f"smoke/{sl}",
                                   "id": "blocks.{layer}.hook_resid_post", "local_dir": str(assets / sl), "gates": gates}
        cfg["dictionaries"][sp] = {"kind": "pretrained", "format": "sparsify", "release": f"smoke/{sp}",
                                   "id": "layers.{layer}", "local_dir": str(assets / sp), "gates": gates}
        probed.append(sl)
    cfg["probe"]["dictionaries"] = probed
    # Feature pages of every preset's dictionaries; auto-interp with a local chat model (a random tiny Qwen3) as
    # explainer and scorer on the GPU, beside the token baseline.
    hub_dicts = [d for p in cfg["presets"].values() if p["model"]["source"] == "hf" for d in p["dictionaries"]]
    cfg["inspect"]["dictionaries"] = [*cfg["inspect"]["dictionaries"], *hub_dicts]
    llm = random_models.random_model("qwen3", assets / "llm", size="tiny", seed=99)
    llm = {"kind": "hf", "hf_id": llm["hf_id"], "revision": llm["revision"], "local_dir": llm["local_dir"],
           "dtype": "float32", "batch_size": 16, "max_new_tokens": 8}
    cfg["autointerp"] = {**cfg["autointerp"], "dictionaries": [*cfg["autointerp"]["dictionaries"], *probed[2:]],
                         "explainer": llm, "scorer": llm}
    # Steering of the embedded preset's SAE (generation with the hook on the GPU).
    cfg["steer"] = {"dictionary": "topk", "n_prompts": 8, "prompt_len": 8, "max_new_tokens": 8, "n_samples": 2,
                    "n_resamples": 200}
    return cfg


def slowest_steps(data: Path, n: int = 8) -> list[dict]:
    """The n longest jobs by wall seconds, from the rules' `benchmark:` files (Snakemake's TSV)."""
    rows = []
    for f in (data / "benchmarks").rglob("*"):
        if f.is_file():
            lines = f.read_text().splitlines()
            if len(lines) >= 2:
                head, vals = lines[0].split("\t"), lines[1].split("\t")
                rows.append({"job": str(f.relative_to(data / "benchmarks")), "s": float(vals[head.index("s")])})
    return sorted(rows, key=lambda r: -r["s"])[:n]


def main(device: str, families: list[str], cores: int) -> int:
    import torch
    import yaml

    from saeflow.workflow import store

    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_smoke: --device cuda but torch sees no GPU (torch.cuda.is_available() is False)")
    tmp = Path(tempfile.mkdtemp(prefix="saeflow-gpu-smoke-"))
    wd = workflow_copy(tmp / "wd")
    t0 = time.perf_counter()
    cfg = smoke_config(tmp / "assets", families, device)
    setup_s = time.perf_counter() - t0
    (wd / "config/smoke.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(wd / "src"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "SPARSIFY_DISABLE_TRITON": "1"}
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "config/smoke.yaml", "--cores", str(cores)]
    print(f"gpu_smoke: {len(cfg['presets'])} presets on {device} in {wd}", flush=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True)
    dag_s = time.perf_counter() - t0
    log = res.stdout + res.stderr
    (tmp / "snakemake.log").write_text(log)
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", log)
    verify = subprocess.run([sys.executable, "-m", "saeflow.cli", "verify"],
                            cwd=wd, env=env, capture_output=True, text=True)
    data = wd / "data"
    recon, fidelity = [], []
    for a in store.iter_artefacts(data / "store"):
        if not store.is_complete(a):
            continue
        m = store.read_manifest(a)
        if a.parent.name == "recon":
            r = store.read_json(a / "metrics.json")
            recon.append({**m["labels"], "fvu": r["fvu"]["value"], "l0": r["l0"]["value"],
                          "ce_recovered": r["ce_recovered"]["value"]})
        elif a.parent.name in ("train_dict", "load_dict") and m.get("fidelity"):
            f = m["fidelity"]
            fidelity.append({**m["labels"], "passed": f["passed"], "n_tied_tokens": f.get("n_tied_tokens"),
                             "n_differing_tokens": f.get("n_differing_tokens")})
    result = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "versions": {name: _version(name) for name in ("torch", "transformers", "transformer_lens", "sae_lens",
                                                        "sparsify", "snakemake")},
        "families": families, "presets": len(cfg["presets"]), "setup_s": round(setup_s, 1),
        "dag_wall_s": round(dag_s, 1), "dag_returncode": res.returncode,
        "jobs_done": f"{done[-1][0]} of {done[-1][1]}" if done else None,
        "verify_returncode": verify.returncode, "verify": verify.stdout.strip().splitlines()[-1:] or verify.stderr[-500:],
        "recon": recon, "fidelity": fidelity, "slowest_jobs": slowest_steps(data), "log": str(tmp / "snakemake.log"),
    }
    write_result(f"gpu_smoke_{device}", result)
    if res.returncode != 0:
        print(log[-6000:], file=sys.stderr)
        return 1
    return 0 if verify.returncode == 0 else 1


def _version(module: str) -> str | None:
    from importlib import metadata

    dist = {"transformer_lens": "transformer-lens", "sae_lens": "sae-lens", "sparsify": "eai-sparsify"}.get(module, module)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    from saeflow.models.hf import FAMILIES

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of {', '.join(FAMILIES)}")
    p.add_argument("--cores", type=int, default=min(8, os.cpu_count() or 1))
    a = p.parse_args()
    fams = [f for f in a.families.split(",") if f]
    unknown = sorted(set(fams) - set(FAMILIES))
    if unknown:
        sys.exit(f"gpu_smoke: --families: unknown {', '.join(unknown)}; allowed: {', '.join(FAMILIES)}")
    sys.exit(main(a.device, fams, a.cores))
