"""Rule lm: train the embedded HookedTransformer; report held-out loss against the unigram entropy."""
import json
import math

import pandas as pd
import torch
from safetensors.numpy import load_file

from saeflow import tensors
from saeflow.models import lm
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
win = load_file(str(inputs["windows"] / "windows.safetensors"))
splits = store.read_manifest(inputs["windows"])["splits"]
torch.manual_seed(p["seed"])
model = lm.build_model(p, inputs["tokenizer"] / "tokenizer", device)
curve = lm.train_lm(model, win["train_tokens"], win["eval_tokens"], p["steps"], p["batch_size"], p["lr"], p["seed"])
eval_bits = curve[-1]["eval_loss"] / math.log(2)
unigram_bits = splits["train"]["unigram_entropy_bits"]
report = {"eval_loss_nats": curve[-1]["eval_loss"], "eval_loss_bits": eval_bits,
          "unigram_entropy_bits": unigram_bits, "below_unigram_by_bits": unigram_bits - eval_bits}
tensors.require_finite(report, "language model training")
with store.write_artefact(out, node, device=device) as art:
    lm.save_model(model, art.path("model"), p)
    pd.DataFrame(curve).to_csv(art.path("training_curve.csv"), index=False)
    store.write_json_atomic(art.path("report.json"), report)
    art.record(report=report)
print(json.dumps(report))
