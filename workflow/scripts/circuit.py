"""Rule circuit: sparse feature-circuit faithfulness over the preset's layers (circuit vs same-size random
latent sets vs all latents, per layer, multi-layer union and build-up curve), then causal ablation of each
layer's circuit with the dictionary spliced in (error term kept) against seeded null sets
(saeflow.evals.circuit, saeflow.evals.ablation; README "Circuits and ablations").

Task: the dataset's document labels, binary between the two most frequent classes of the sampled train
windows (as probing). Ablation metric: the class-consistent logit margin between the 20 tokens most
over-represented in positive and in negative train windows, on the task's eval windows.
"""
import numpy as np
import pandas as pd
from safetensors.numpy import load_file

from saeflow import tensors
from saeflow.data import activations
from saeflow.evals import ablation, circuit, locality, probe
from saeflow.models import lm
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
model = lm.load_model(inputs["lm"] / "model", device)
layers = p["layers"]
specs = locality.load_layer_dicts({L: inputs[f"dict_L{L}"] for L in layers}, device)
win = load_file(str(inputs["windows"] / "windows.safetensors"))
rng = np.random.default_rng(p["seed"])
sub = np.sort(rng.choice(len(win["train_tokens"]), min(p["n_train"], len(win["train_tokens"])), replace=False))
tr_idx, te_idx, y_tr, y_te, task = probe.binary_task(win["train_label"][sub], win["eval_label"])
tr_tokens, te_tokens = win["train_tokens"][sub][tr_idx], win["eval_tokens"][te_idx]
encoders = {L: (s.hook_in, s.codes) for L, s in specs.items()}
_, X_tr = activations.pooled_features(model, tr_tokens, [], encoders)
_, X_te = activations.pooled_features(model, te_tokens, [], encoders)
table, circuits = circuit.circuit_faithfulness(X_tr, X_te, y_tr, y_te, p["ks"], p["n_random"], p["n_resamples"],
                                               p["seed"])
task_name = f"{node['labels']['dataset']}: label {task['positive']} vs {task['negative']}"
table = table.assign(task=task_name, **jobs.coordinates(node))

# Ablation: answer tokens of the task, then every layer's circuit of each K against seeded nulls.
a_ids, b_ids = ablation.answer_tokens(tr_tokens[:, 1:], y_tr == 1, model.cfg.d_vocab)  # BOS left out
abl_rows = []
for L in layers:
    alive = np.flatnonzero((X_tr[L] > 0).any(0))
    # mean mode: each latent's mean activation over the train windows' positions (windows have equal length)
    mean_codes = X_tr[L].mean(0) if p["ablation_mode"] == "mean" else None
    for k in p["ks"]:
        r = ablation.ablation_with_nulls(model, specs[L].hook_in, specs[L].module, te_tokens, y_te, a_ids, b_ids,
                                         circuits[L][int(k)], alive, p["n_null"], p["ablation_mode"], mean_codes,
                                         p["seed"] + L)
        abl_rows.append({"layer": L, **{k2: v for k2, v in r.items() if k2 != "null"},
                         "null": ",".join(f"{v:.6g}" for v in r["null"]), "task": task_name,
                         "dictionary": p["dictionary"]})
abl = pd.DataFrame(abl_rows).assign(**jobs.coordinates(node))
tensors.require_finite({c: table[c] for c in ("acc_circuit", "acc_random", "acc_ceiling", "gap", "gap_lo", "gap_hi")}
                       | {"ablation.effect": abl["effect"], "ablation.null_mean": abl["null_mean"]}, "circuit")

best = table[table["scope"] == "union"].sort_values("k").iloc[-1]
summary = {"task": task, "dictionary": p["dictionary"], "layers": layers, "ks": p["ks"], "n_random": p["n_random"],
           "circuits": {str(L): {str(k): v for k, v in c.items()} for L, c in circuits.items()},
           "union": {c: (float(best[c]) if c != "layers" else best[c]) for c in
                     ("k", "acc_circuit", "acc_random", "acc_ceiling", "faithfulness", "gap", "gap_lo", "gap_hi",
                      "null_quantile", "layers")},
           "answer_tokens": {"positive": sorted(a_ids), "negative": sorted(b_ids)},
           "ablation": abl.drop(columns=["null"]).to_dict(orient="records")}
with store.write_artefact(out, node, device=device) as art:
    table.to_parquet(art.path("circuit.parquet"), index=False)
    table.to_csv(art.path("circuit.csv"), index=False)
    abl.to_parquet(art.path("ablation.parquet"), index=False)
    abl.to_csv(art.path("ablation.csv"), index=False)
    store.write_json_atomic(art.path("summary.json"), summary)
    art.record(task=task, union=summary["union"])
print(table.to_string())
print(abl.to_string())
