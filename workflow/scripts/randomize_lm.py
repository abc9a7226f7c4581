"""Rule randomize_lm: the randomized-model control of a preset (saeflow.models.controls): the base model's
`model/` files and `randomized.json` (seed, init), from which every downstream job loads the model with its
weights re-initialised; held-out loss of the base and the randomized model against the unigram entropy."""
import json
import math
import shutil

import torch
from safetensors.numpy import load_file

from saeflow import tensors
from saeflow.models import controls, lm
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
eval_tokens = load_file(str(inputs["windows"] / "windows.safetensors"))["eval_tokens"]
unigram_bits = store.read_manifest(inputs["windows"])["splits"]["train"]["unigram_entropy_bits"]
base = lm.load_model(inputs["lm"] / "model", device)
base_bits = lm.eval_loss(base, eval_tokens) / math.log(2)
with store.write_artefact(out, node, device=device) as art:
    shutil.copytree(inputs["lm"] / "model", art.path("model"))
    art.path(f"model/{controls.RANDOMIZED_FILE}").write_text(json.dumps({"seed": p["seed"], "init": p["init"]}))
    model = lm.load_model(art.path("model"), device)
    if torch.equal(model.W_E, base.W_E):
        raise RuntimeError(f"{art.path('model')} loaded with the base model's weights, not re-initialised ones")
    rand_bits = lm.eval_loss(model, eval_tokens) / math.log(2)
    # a re-initialised model predicts about uniformly: its loss sits near log2(vocab), above the unigram entropy
    report = {"eval_loss_bits": rand_bits, "base_eval_loss_bits": base_bits, "unigram_entropy_bits": unigram_bits,
              "uniform_bits": math.log2(model.cfg.d_vocab), "n_eval_windows": len(eval_tokens)}
    tensors.require_finite(report, "randomized-model control")
    store.write_json_atomic(art.path("report.json"), report)
    art.record(report=report)
print(json.dumps(report))
