"""Rule events: top-activating events per latent (at most one per window) from the cached activations."""
import torch

from saeflow.data import activations
from saeflow.evals import locality
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
dicts = locality.load_layer_dicts({L: inputs[f"dict_L{L}"] for L in p["layers"]}, device)
with store.write_artefact(out, node, device=device) as art:
    counts = {}
    for L, spec in dicts.items():
        blocks = activations.iter_window_blocks(inputs["cache"], spec.hook_in, p["positions_per_window"])
        with torch.no_grad():
            codes = (spec.codes(x.to(device)).cpu() for x in blocks)
            events = locality.top_events(codes, p["positions_per_window"], p["k"], p["min_pos"])
        events.to_parquet(art.path(f"top_contexts_layer{L}.parquet"), index=False)
        counts[L] = {"n_events": int(len(events)), "n_latents": int(events["feature_id"].nunique())}
    art.record(counts=counts)
print(counts)
