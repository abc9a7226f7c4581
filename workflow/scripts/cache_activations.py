"""Rule cache: one forward per batch over the training windows, every site of the preset cached."""
from safetensors.numpy import load_file

from saeflow.data import activations
from saeflow.models import lm
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
model = lm.load_model(inputs["lm"] / "model", device)
tokens = load_file(str(inputs["windows"] / "windows.safetensors"))["train_tokens"]
with store.write_artefact(out, node, device=device) as art:
    stats = activations.cache_activations(model, tokens, p["sites"], art.dir, dtype=p["dtype"],
                                          shard_tokens=p["shard_tokens"], batch_size=p["batch_size"])
    art.record(n_tokens={s: v["n_tokens"] for s, v in stats.items()})
