"""Rule ctxlen_sweep: one fixed text, the query token at its end, per-latent entropy for each context length."""

from saeflow import tensors
from saeflow.evals import locality
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
model, dicts, win = locality.load_model_and_dicts(inputs, p["layers"], device)
text = win["eval_tokens"][0]  # the first eval window, fixed: recorded by doc id and start below
bos = store.read_manifest(inputs["windows"])["bos_id"]
features, token = locality.ctxlen_sweep(model, text, dicts, p["threshold"], p["lengths"], bos, p["memory_budget_mb"])
tensors.require_finite({"entropy": features["entropy"], "token_vector_entropy": token["token_vector_entropy"]},
                       "context-length sweep")
with store.write_artefact(out, node, device=device) as art:
    features.assign(**jobs.coordinates(node)).to_parquet(art.path("entropy_vs_context_len.parquet"), index=False)
    token.assign(**jobs.coordinates(node)).to_parquet(art.path("token_vector_vs_context_len.parquet"), index=False)
    store.write_json_atomic(art.path("prompt.json"), {"doc_id": int(win["eval_doc_id"][0]),
                                                      "start_idx": int(win["eval_start_idx"][0]),
                                                      "tokens": text.tolist()})
print(token.to_string())
