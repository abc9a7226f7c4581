"""Rule probe: SAEBench-style sparse probing of SAE latents vs the raw residual baseline, every layer at once.

Task: the dataset's document labels (code-python: standard-library package; synthetic: planted topic; HF:
its label column), binary between the two most frequent classes of the sampled train windows.
"""
import numpy as np
import pandas as pd
from safetensors.numpy import load_file

from saeflow import tensors
from saeflow.data import activations
from saeflow.evals import locality, probe
from saeflow.models import lm
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
model = lm.load_model(inputs["lm"] / "model", device)
specs = {(L, d): locality.load_layer_dicts({L: inputs[f"dict_L{L}_{d}"]}, device)[L]
         for L in p["layers"] for d in p["dictionaries"]}
win = load_file(str(inputs["windows"] / "windows.safetensors"))
rng = np.random.default_rng(p["seed"])
sub = np.sort(rng.choice(len(win["train_tokens"]), min(p["n_train"], len(win["train_tokens"])), replace=False))
tr_idx, te_idx, y_tr, y_te, task = probe.binary_task(win["train_label"][sub], win["eval_label"])
tr_tokens, te_tokens = win["train_tokens"][sub][tr_idx], win["eval_tokens"][te_idx]
hooks = sorted({s.hook_in for s in specs.values()})
encoders = {f"{L}/{d}": (s.hook_in, s.codes) for (L, d), s in specs.items()}
raw_tr, sae_tr = activations.pooled_features(model, tr_tokens, hooks, encoders)
raw_te, sae_te = activations.pooled_features(model, te_tokens, hooks, encoders)
rows, per_window = [], []
for (L, d), s in specs.items():
    df, correct = probe.sparse_probing(sae_tr[f"{L}/{d}"], sae_te[f"{L}/{d}"], raw_tr[s.hook_in], raw_te[s.hook_in],
                                       y_tr, y_te, ks=p["ks"], n_resamples=p["n_resamples"], seed=p["seed"],
                                       return_correct=True)
    rows.append(df.assign(layer=L, dictionary=d, task=f"{node['labels']['dataset']}: label {task['positive']} vs {task['negative']}"))
    # per test window (its index among the eval windows): the items a head-to-head comparison pairs
    per_window += [pd.DataFrame({"layer": L, "dictionary": d, "k": k, "window": te_idx.astype(np.int64),
                                 "correct_sae": c_s, "correct_raw": c_r}) for k, (c_s, c_r) in correct.items()]
result = pd.concat(rows, ignore_index=True).assign(**jobs.coordinates(node))
tensors.require_finite({c: result[c] for c in ("acc_sae", "acc_raw", "diff", "diff_lo", "diff_hi")}, "sparse probing")
with store.write_artefact(out, node, device=device) as art:
    result.to_parquet(art.path("probe.parquet"), index=False)
    result.to_csv(art.path("probe.csv"), index=False)
    pd.concat(per_window, ignore_index=True).assign(**jobs.coordinates(node)).to_parquet(art.path("correct.parquet"),
                                                                                         index=False)
    store.write_json_atomic(art.path("task.json"), task)
    art.record(task=task)
print(result.to_string())
