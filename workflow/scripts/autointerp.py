"""Rule autointerp: explanations of a seeded sample of live latents of one dictionary at one layer, scored by
detection and fuzzing, each with the shuffled-explanation control (saeflow.evals.autointerp).

Methods: the configured (explainer, scorer), and the offline token baseline (token explainer, token scorer)
whenever the configured pair is another. Outputs: explanations.parquet (method, feature_id, explanation, kind),
scores.parquet (one row per scored item), latent_scores.parquet (per method, task, control and latent: accuracy
over its items), examples.parquet (every excerpt with its tokens and activations), summary.json (accuracy with
its two-level bootstrap CI per method, task, control and, on the synthetic corpus, planted kind of the latent's
peak tokens), prompts.json (the hf prompts, when an hf model explains or scores)."""
import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load_file

from saeflow import tensors
from saeflow.data import activations, tokenizer
from saeflow.evals import autointerp, locality
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
lab = node["labels"]
device = jobs.device_of(node)
L, P = p["layer"], p["positions_per_window"]
spec = locality.load_layer_dicts({L: inputs["dict"]}, device)[L]
tok = tokenizer.load_tokenizer(inputs["tokenizer"] / "tokenizer")
tokens = load_file(str(inputs["windows"] / "windows.safetensors"))["train_tokens"]
stats = pd.read_parquet(inputs["events"] / f"latent_stats_layer{L}.parquet")
live = stats.loc[stats["n_fired"] > 0, "feature_id"].to_numpy()
# candidates in a seeded order; the first n_latents with enough activating and silent windows are explained
candidates = np.random.default_rng([p["seed"], 0]).permutation(live)[: max(4 * p["n_latents"], p["n_latents"] + 32)]


def codes():
    for x in activations.iter_window_blocks(inputs["cache"], spec.hook_in, P):
        with torch.no_grad():
            yield spec.codes(x.to(device)).cpu()


examples, counts = autointerp.collect_examples(codes, P, candidates, tokens, tok, p["n_latents"], p["n_explain"],
                                               p["n_score"], p["example_len"], p["seed"])
if len(examples) < 2:
    raise RuntimeError(f"autointerp {lab}: only {len(examples)} of {len(candidates)} candidate latents have "
                       f"{p['n_explain'] + p['n_score']} activating and {p['n_score']} silent windows; lower "
                       "autointerp.n_explain / n_score or scan more windows (windows.n_train)")
models: dict = {}
# where a hub LLM's local copy is on this machine (config `local_dir`): never part of the key
local = node.get("runtime", {}).get("llm_local_dirs", {})
configured = tuple({**s, "local_dir": local.get(f"{s['hf_id']}@{s['revision']}")} if s["kind"] == "hf" else s
                   for s in (p["explainer"], p["scorer"]))
# the offline token baseline is always scored, beside whatever else is configured
baseline = ({"kind": "token", "n_tokens": autointerp.BASELINE_TOKENS}, {"kind": "token"})
pairs = [configured] + ([] if (configured[0]["kind"], configured[1]["kind"]) == ("token", "token") else [baseline])
methods = []
for ex_spec, sc_spec in pairs:
    ex, sc = autointerp.make_method(ex_spec, sc_spec, device, p["seed"], models)
    methods.append((autointerp.method_name(ex, sc), ex, sc))
expl, items = autointerp.evaluate(examples, methods, p["seed"])
groups = {"all": sorted(examples)}
meta_path = inputs["corpus"] / "synthetic_meta.json"
kind_of = {}
if meta_path.is_file():  # planted kinds: the majority kind of each latent's peak tokens in its explain set
    kinds = locality.token_kinds(tok, store.read_json(meta_path))
    for a, exs in examples.items():
        peaks = [kinds.get(int(e.token_ids[int(np.argmax(e.acts))]), "other") for e in exs if e.split == "explain"]
        kind_of[a] = max(sorted(set(peaks)), key=peaks.count)
    for k in sorted(set(kind_of.values())):
        groups[k] = [a for a in sorted(examples) if kind_of[a] == k]
summary = autointerp.summarise(items, groups, p["n_resamples"], p["confidence"], p["seed"])
tensors.require_finite({"accuracy": [r["accuracy"] for r in summary], "lo": [r["lo"] for r in summary],
                        "hi": [r["hi"] for r in summary]}, f"autointerp {lab}")
coords = jobs.coordinates(node)
expl_df = pd.DataFrame(expl).assign(**coords)
expl_df["kind"] = pd.Series(expl_df["feature_id"].map(kind_of) if kind_of else None, index=expl_df.index, dtype="string")
items_df = pd.DataFrame(items).assign(**coords)
per_latent = (items_df.groupby(["method", "control", "task", "feature_id"])["correct"]
              .agg(accuracy="mean", n_items="size").reset_index().assign(**coords))
ex_df = pd.DataFrame([{"feature_id": e.feature_id, "example_id": e.example_id, "split": e.split, "window_idx": e.window_idx,
                       "start": e.start, "activating": e.activating, "quantile": e.quantile, "max_act": e.max_act,
                       "tokens": e.token_ids.astype(np.int32), "token_strs": e.token_strs, "acts": e.acts}
                      for exs in examples.values() for e in exs]).assign(**coords)
hf_used = any(s["kind"] == "hf" for s in configured)
with store.write_artefact(out, node, device=device) as art:
    expl_df.to_parquet(art.path("explanations.parquet"), index=False)
    items_df.to_parquet(art.path("scores.parquet"), index=False)
    per_latent.to_parquet(art.path("latent_scores.parquet"), index=False)
    ex_df.to_parquet(art.path("examples.parquet"), index=False)
    result = {"coordinates": coords, "methods": [m[0] for m in methods], "explainer": p["explainer"],
              "scorer": p["scorer"], "n_latents": len(examples), **counts, "summary": summary,
              "confidence": p["confidence"]}
    store.write_json_atomic(art.path("summary.json"), result)
    if hf_used:
        store.write_json_atomic(art.path("prompts.json"), autointerp.PROMPTS)
    art.record(autointerp={k: result[k] for k in ("methods", "explainer", "scorer", "n_latents", "summary")},
               prompts=autointerp.PROMPTS if hf_used else None)
print(pd.DataFrame(summary).to_string())
