"""Rule entropy: feature-influence entropy vs depth for one (preset, dataset), every layer from one forward.

Per layer, in the seed card's `entropy_comparison_<site>_layer<L>` schema without pickles:
`.parquet` (one row per window and active latent), `_windows.parquet` (one row per window) and
`.safetensors` (feature_influences, feature_activations aligned with the rows; token_vector_influence).
"""
import json

from safetensors.numpy import save_file

from saeflow import tensors
from saeflow.evals import locality
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
model, dicts, win = locality.load_model_and_dicts(inputs, p["layers"], device)
res = locality.entropy_vs_depth(model, win["eval_tokens"], win["eval_start_idx"], dicts, p["threshold"],
                                p["n_windows"], p["seed"], p["token_vector"], p["memory_budget_mb"])
with store.write_artefact(out, node, device=device) as art:
    summary = {}
    for L, r in res.items():
        tensors.require_finite({"entropy": r["features"]["entropy"], "activation": r["features"]["activation"],
                                "token_vector_entropy": r["windows"]["token_vector_entropy"].dropna(),
                                **r["arrays"]}, f"entropy vs depth, layer {L}")
        stem = f"entropy_comparison_{p['site']}_layer{L}"
        r["features"].assign(**jobs.coordinates(node, layer=L)).to_parquet(art.path(f"{stem}.parquet"), index=False)
        r["windows"].assign(**jobs.coordinates(node, layer=L)).to_parquet(art.path(f"{stem}_windows.parquet"),
                                                                          index=False)
        save_file(r["arrays"], str(art.path(f"{stem}.safetensors")))
        per_latent = locality.mean_entropy_per_latent(r["features"])
        summary[L] = {"n_windows": int(len(r["windows"])), "n_rows": int(len(r["features"])),
                      "n_latents": int(len(per_latent)), "mean_latent_entropy": float(per_latent["mean_entropy"].mean()),
                      "mean_token_vector_entropy": float(r["windows"]["token_vector_entropy"].mean())}
    store.write_json_atomic(art.path("summary.json"), {**node["labels"], "layers": summary})
    store.write_json_atomic(art.path("config.json"), {**p, "ctx_len": int(win["eval_tokens"].shape[1]),
                                                     "total_features": {L: int(d.module.cfg.d_sae) for L, d in dicts.items()}})
    art.record(summary=summary)
print(json.dumps(summary, indent=1))
