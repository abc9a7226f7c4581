"""What every workflow script does first: log redirection, thread count, and reading its node.

The scripts receive Snakemake's `snakemake` object; this module only reads attributes from it and
never imports Snakemake, so the library stays testable without it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
from pathlib import Path


def start(smk) -> tuple[dict, dict[str, Path], Path]:
    """(node, upstream artefact dirs by role, output dir) for the job described by `smk`.

    Sends stdout/stderr and logging to the rule's log, and caps torch/BLAS threads at the job's
    `threads` (on a 2-core machine oversubscription made torch 5-20x slower). Then, before any work:
    - takes the key's lock in the store (saeflow.workflow.store.key_lock), held until the process exits, so two
      runs sharing a store never compute one key at once;
    - if the artefact is complete already (another checkout or machine finished it), verifies it and exits
      with success without recomputing anything;
    - verifies every input artefact (manifest, sizes, sha256: saeflow.workflow.store.verify_inputs), so a corrupt
      input fails the job naming the file instead of flowing into results.
    Rule outputs and inputs are artefact manifests (`<store>/<step>/<key>/manifest.json`); the paths
    returned are their directories.
    """
    if smk.log:
        f = open(str(smk.log[0]), "a", buffering=1)
        sys.stdout = sys.stderr = f
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    log = logging.getLogger("saeflow")
    threads = str(max(1, int(getattr(smk, "threads", 1) or 1)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = threads
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    from saeflow.workflow import store

    node = dict(smk.params.node)
    out = _artefact_dir(smk.output[0])
    lock = store.key_lock(out)
    lock.__enter__()
    # Held until the process exits, and released then while `os` is still importable (a generator
    # finalised at interpreter teardown prints "Exception ignored ... 'NoneType' object has no attribute
    # 'close'" into every job's log).
    atexit.register(lock.__exit__, None, None, None)
    if store.is_complete(out):
        problems = store.verify_artefact(out)
        if problems:
            raise store.CorruptInput(f"{out} exists but does not match its manifest ({'; '.join(problems[:3])}); "
                                     "run `saeflow verify --remove`, then rerun")
        log.info("step %s key %s: already complete in the store (another run made it); nothing to do",
                 node["step"], node["key"])
        sys.exit(0)
    import torch

    torch.set_num_threads(int(threads))
    node["fingerprint"] = code_fingerprint(node)
    # Local copies of hub models for this job (saeflow.models.lm.local_model_dirs); never part of a key.
    os.environ["SAEFLOW_MODEL_LOCAL_DIRS"] = json.dumps(node.get("runtime", {}).get("model_local_dirs", {}))
    inputs = {role: _artefact_dir(smk.input[role]) for role in node["upstream"]}
    checked = store.verify_inputs(inputs, node["upstream"])
    log.info("step %s key %s labels %s; inputs verified: %s", node["step"], node["key"], node["labels"], checked)
    return node, inputs, out


def _artefact_dir(path) -> Path:
    """The artefact directory of a rule's input or output (its manifest file, or the directory itself)."""
    p = Path(str(path))
    return p.parent if p.name == "manifest.json" else p


COORDINATES = ("preset", "dataset", "layer", "dictionary")


def coordinates(node: dict, **more) -> dict:
    """The coordinates a published table carries as columns (README "Publishing and syncing"): the node's labels
    among preset, dataset, layer and dictionary, and ``more`` (a table's own: its layer, ctx_len, ...), so that the
    rows of one dataset-viewer config from every run, layer and dictionary tell each other apart."""
    return {**{k: node["labels"][k] for k in COORDINATES if k in node["labels"]}, **more}


def device_of(node: dict) -> str:
    """The torch device a node runs on: its `device` param, falling back to CPU when CUDA is absent."""
    want = node["params"].get("device", "cpu")
    if want == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"node {node['key']} ({node['labels']}) wants device 'cuda' but none is available; "
                               "set the preset's `device: cpu` or run on a GPU node")
    return want


def code_fingerprint(node: dict) -> dict:
    """The step's code fingerprint as it is now, checked against the digest its key was computed from.

    A mismatch means the code changed between planning and running (e.g. an edit while the workflow
    ran): the artefact would be stored under a key that does not describe its code, so the job fails.
    """
    # The script path comes with the node (not from saeflow.workflow.plan): importing the planner here would put
    # it, and the config checks, into every step's fingerprint, and an edit of them would rerun everything.
    from saeflow.workflow.keys import Fingerprinter

    src = Path(__file__).resolve().parents[2]  # src/ (this file is src/saeflow/workflow/jobs.py)
    fp = Fingerprinter(src).fingerprint(src.parent / node["script"])
    if fp["digest"] != node["code_digest"]:
        raise RuntimeError(f"the code of step {node['step']} changed after the DAG was planned (key {node['key']}); "
                           "rerun snakemake so that keys match the code")
    return fp
