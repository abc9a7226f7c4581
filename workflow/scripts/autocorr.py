"""Rule autocorr: per-latent activation autocorrelation of the influence dictionary over documents (here:
windows, BOS excluded), pooled as metrics.md says; the seed card's feature_activation_autocorr files per
layer, with H_pos (longest context) of the latents as entropy targets."""
import numpy as np
import pandas as pd
import torch

from saeflow.data import activations
from saeflow.evals import autocorr, locality
from saeflow.tensors import to_numpy
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
model, dicts, win = locality.load_model_and_dicts(inputs, p["layers"], device)
docs = win["train_tokens"][: p["n_docs"]]
hooks = {L: s.hook_in for L, s in dicts.items()}


def codes_by_layer():
    """Yield (doc_id, {layer: codes [T-1, d_sae] numpy}) for every document, batched forwards."""
    for i, acts in activations.site_batches(model, docs, list(hooks.values()), batch_size=32):
        with torch.no_grad():
            f = {L: to_numpy(dicts[L].codes(acts[h]), torch.float32) for L, h in hooks.items()}
        for j in range(f[p["layers"][0]].shape[0]):
            yield i + j, {L: v[j] for L, v in f.items()}


hp = store.read_manifest(inputs["h_pos"])
ctx = max(hp["params"]["ctx_lens"])
accs = {L: autocorr.AutocorrAccumulator(int(s.module.cfg.d_sae), p["max_lag"]) for L, s in dicts.items()}
for _, f in codes_by_layer():
    for L, a in accs.items():
        a.add(f[L])
selected, tops = {}, {}
for L, a in accs.items():
    dens = a.density()
    lat = autocorr.select_latents(dens, p["density_min"], p["density_max"], p["max_latents"])
    selected[L] = pd.DataFrame({"feature_id": lat, "density": dens[lat]})
    tops[L] = autocorr.TopExamples(lat, p["top_k"], p["radius"])
for doc_id, f in codes_by_layer():  # second pass: peaks and strips of the selected latents only
    for L, top in tops.items():
        top.add(doc_id, f[L])
with store.write_artefact(out, node, device=device) as art:
    summary = {}
    for L, a in accs.items():
        rows = pd.read_parquet(inputs["h_pos"] / f"layer{L}/ctx{ctx}.parquet")
        targets = rows[(rows["status"] == "ok") & rows["feature_id"].isin(selected[L]["feature_id"])]
        targets = targets[["feature_id", "event_idx", "window_idx", "pos", "H_pos"]].assign(ctx=ctx)
        run_config = {**node["labels"], **p, "layer": L, "n_docs": int(len(docs)), "doc_len": int(docs.shape[1] - 1),
                      "entropy_targets": f"H_pos at top-activating events, context {ctx} tokens (the windows are "
                                         f"{docs.shape[1]} tokens, so the seed's 256-token lookback is not available)"}
        autocorr.write_outputs(art.path(f"layer{L}/x").parent, selected[L], tops[L], a.rho(),
                               selected[L]["feature_id"].to_numpy(), run_config, targets)
        summary[L] = {"n_selected": int(len(selected[L])),
                      "median_autocorr_length": float(np.nanmedian(autocorr.autocorr_length(a.rho()[selected[L]["feature_id"]])))
                      if len(selected[L]) else None}
    art.record(summary=summary)
print(summary)
