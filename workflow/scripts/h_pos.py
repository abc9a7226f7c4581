"""Rule h_pos: H_pos on the N-token windows ending at top-activating events, per layer and context length.

Writes per layer `layer<L>/ctx<N>.parquet` + `.csv` (rows: feature_id, event_idx, H_pos, peak_token_idx,
peak_value, sum_J, status, ..., and the context as a page renders it: context, peak_token_text, peak_index,
tokens, token_strs, acts, the latent's activation at each token of the N-token context after BOS; the CSV
leaves the lists out) and `layer<L>/influences_ctx<N>.npz` (raw J vectors keyed by row index).
On the synthetic corpus each event is labelled with the planted kind of its peak word (echo: fixed by the
word `lag` positions back; topic: fixed by the document's topic; filler) and `ground_truth.json` compares
H_pos of latents that fire on echo words with latents that fire on topic words.
"""
import json

import numpy as np
import pandas as pd

from saeflow import tensors
from saeflow.evals import contexts, locality
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
model, dicts, win = locality.load_model_and_dicts(inputs, p["layers"], device)
tokens = win["train_tokens"]
bos = store.read_manifest(inputs["windows"])["bos_id"]
meta_path = inputs["corpus"] / "synthetic_meta.json"
kinds = locality.token_kinds(model.tokenizer, store.read_json(meta_path)) if meta_path.is_file() else None

with store.write_artefact(out, node, device=device) as art:
    truth = {}
    for L, spec in dicts.items():
        events = pd.read_parquet(inputs["events"] / f"top_contexts_layer{L}.parquet")
        chosen = locality.select_latents(events, p["n_latents"])
        events = events[events["feature_id"].isin(chosen)].reset_index(drop=True)
        results = locality.h_pos(model, tokens, events, spec, L, p["ctx_lens"], bos, p["threshold"])
        for N, (rows, infl) in results.items():
            ok = rows["status"] == "ok"
            tensors.require_finite({"H_pos": rows.loc[ok, "H_pos"], "sum_J": rows.loc[ok, "sum_J"]},
                                   f"h_pos layer {L} ctx {N}")
            ctx = np.stack([np.concatenate([[bos], tokens[w][q - N + 2: q + 1]])
                            for w, q in zip(rows["window_idx"], rows["pos"])]) if len(rows) else np.zeros((0, N), int)
            acts = contexts.context_activations(model, ctx, spec, rows["feature_id"])
            rows = contexts.with_text(rows, ctx[:, 1:], acts, model.tokenizer, N - 2)
            rows = rows.assign(**jobs.coordinates(node, layer=L, ctx_len=N))
            # one schema on every corpus (one viewer config reads them all): null where nothing is planted
            rows["kind"] = pd.Series([kinds.get(int(t), "other") for t in rows["peak_token"]] if kinds is not None
                                     else [None] * len(rows), dtype="string", index=rows.index)
            rows.to_parquet(art.path(f"layer{L}/ctx{N}.parquet"), index=False)
            rows.drop(columns=["tokens", "token_strs", "acts"]).to_csv(art.path(f"layer{L}/ctx{N}.csv"), index=False)
            np.savez(art.path(f"layer{L}/influences_ctx{N}.npz"), **infl)
            if kinds is not None:
                truth[f"layer{L}_ctx{N}"] = locality.kind_contrast(rows)
    if truth:
        store.write_json_atomic(art.path("ground_truth.json"), truth)
        art.record(ground_truth=truth)
print(json.dumps(truth, indent=1))
