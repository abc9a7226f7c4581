"""Rule saebench: SAEBench's sparse-probing protocol (saeflow.evals.saebench) of one task, at every layer and SAE of the
preset: balanced one-vs-rest probes of each class, on the top-k latents and on the top-k raw dims, averaged over the
classes as SAEBench reports them.

A task is a SAEBench dataset on the Hugging Face hub (pinned; items are the beginnings of its texts, its train and
test splits, SAEBench's class list and balance column) or one of the preset's own labelled datasets (items are its
train windows; the documents of each class are split, seeded, three quarters for train items and the rest for test
items, so that no document gives both). Outputs: saebench.parquet / .csv (one row per layer, dictionary,
representation, class and k), summary.json (per layer and dictionary SAEBench's metric names, with a bootstrap CI of
sae_top_1 and llm_top_1 over the test items), items.json (the classes and the items drawn)."""
import numpy as np
import pandas as pd
from safetensors.numpy import load_file

from saeflow import tensors
from saeflow.data import tokenizer as tok_mod
from saeflow.evals import locality, saebench
from saeflow.models import lm
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
task = p["task"]
device = jobs.device_of(node)
rng = np.random.default_rng(p["seed"])
n_tr, n_te = p["train_size"] // 2, p["test_size"] // 2
model = lm.load_model(inputs["lm"] / "model", device)
specs = {(L, d): locality.load_layer_dicts({L: inputs[f"dict_L{L}_{d}"]}, device)[L]
         for L in p["layers"] for d in p["dictionaries"]}


def _need(have: int, want: int, what: str, key: str) -> None:
    if have < want:
        raise ValueError(f"saebench task {task['name']!r}: {what} has {have} items, {want} asked; lower "
                         f"saebench.{key} or give the dataset more ({'windows.n_train' if 'dataset' in task else 'rows'})")


def split_by_document(c: int):
    """(train windows, test windows) of class c: its documents shuffled, three quarters give train items, the rest
    test items (None when it has fewer than two documents)."""
    d = rng.permutation(np.unique(docs[labels == c]))
    if d.size < 2:
        return None
    cut = max(1, min(d.size - 1, round(0.75 * d.size)))
    return (np.flatnonzero(np.isin(docs, d[:cut]) & (labels == c)),
            np.flatnonzero(np.isin(docs, d[cut:]) & (labels == c)))


if "dataset" in task:
    win = load_file(str(inputs["windows"] / "windows.safetensors"))
    labels, docs, tokens = win["train_label"], win["train_doc_id"], win["train_tokens"]
    tr_rows, te_rows = {}, {}
    if task.get("classes"):
        for c in task["classes"]:
            parts = split_by_document(c)
            _need(0 if parts is None else len(parts[0]), n_tr, f"class {c} (train windows)", "train_size")
            _need(len(parts[1]), n_te, f"class {c} (test windows)", "test_size")
            tr_rows[c], te_rows[c] = parts
    else:  # the most frequent classes (ties: smaller label) whose documents give enough items on both sides
        by_freq = sorted(np.unique(labels).tolist(), key=lambda c: (-int((labels == c).sum()), c))
        for c in by_freq:
            parts = split_by_document(c)
            if parts is not None and len(parts[0]) >= n_tr and len(parts[1]) >= n_te:
                tr_rows[c], te_rows[c] = parts
            if len(tr_rows) == task["n_classes"]:
                break
    classes = sorted(tr_rows)
    _need(len(classes), 2, "the class list (classes with enough windows in both parts)", "train_size")
    for c in classes:
        tr_rows[c] = np.sort(rng.choice(tr_rows[c], n_tr, replace=False))
        te_rows[c] = np.sort(rng.choice(te_rows[c], n_te, replace=False))
    ids_tr, ids_te = (np.concatenate([tokens[r[c]] for c in classes]) for r in (tr_rows, te_rows))
    keep_tr, keep_te = (np.broadcast_to(np.arange(ids.shape[1]) > 0, ids.shape) for ids in (ids_tr, ids_te))
    items = {"train": {str(c): tr_rows[c].tolist() for c in classes}, "test": {str(c): te_rows[c].tolist() for c in classes},
             "unit": "train windows (index), split by document"}
else:
    from saeflow.data.corpus import load_hf_documents

    local = node.get("runtime", {}).get("local_dir")
    split_docs = {s: load_hf_documents(task["repo"], task["revision"], task[f"{s}_split"],
                                       text_column=task["text_column"], label_column=task["label_column"],
                                       local_dir=local, group_column=task.get("balance_column"))
                  for s in ("train", "test")}
    classes = task.get("classes") or saebench.CLASS_SETS[task["name"]]
    picked = {}
    for s, n in (("train", n_tr), ("test", n_te)):
        ds = split_docs[s]
        groups = [d.group for d in ds] if task.get("balance_column") else None
        picked[s] = saebench.class_samples([d.label for d in ds], classes, n, rng, groups)
    classes = [c for c in classes if c in picked["train"] and c in picked["test"]]
    _need(len(classes), 2, "the class list (classes with enough items in both splits)", "train_size")
    tokenizer = tok_mod.load_tokenizer(inputs["tokenizer"] / "tokenizer")
    bos = store.read_manifest(inputs["tokenizer"]).get("bos_id", tokenizer.bos_token_id)
    ids_tr, keep_tr = saebench.tokenize_beginnings(
        tokenizer, [split_docs["train"][i].text for c in classes for i in picked["train"][c]], p["context_length"], bos)
    ids_te, keep_te = saebench.tokenize_beginnings(
        tokenizer, [split_docs["test"][i].text for c in classes for i in picked["test"][c]], p["context_length"], bos)
    tr_rows, te_rows = picked["train"], picked["test"]
    items = {s: {str(c): [split_docs[s][i].source for i in picked[s][c]] for c in classes} for s in ("train", "test")}
    items["unit"] = f"text beginnings, {p['context_length']} tokens"

hooks = sorted({s.hook_in for s in specs.values()})
encoders = {f"{L}/{d}": (s.hook_in, s.codes) for (L, d), s in specs.items()}
raw_tr, sae_tr = saebench.masked_mean(model, ids_tr, keep_tr, hooks, encoders)
raw_te, sae_te = saebench.masked_mean(model, ids_te, keep_te, hooks, encoders)


def by_class(X, rows) -> dict[int, np.ndarray]:
    """Split a feature matrix laid out class after class back into {class: its rows}."""
    out, at = {}, 0
    for c in classes:
        out[int(c)] = X[at: at + len(rows[c])]
        at += len(rows[c])
    return out


tables, summary = [], {}
for (L, d), s in specs.items():
    rows = saebench.evaluate({"sae": by_class(sae_tr[f"{L}/{d}"], tr_rows), "raw": by_class(raw_tr[s.hook_in], tr_rows)},
                             {"sae": by_class(sae_te[f"{L}/{d}"], te_rows), "raw": by_class(raw_te[s.hook_in], te_rows)},
                             p["ks"], p["seed"])
    metrics = saebench.saebench_metrics(rows)
    for rep, name in (("sae", "sae_top_1"), ("raw", "llm_top_1")):
        sel = rows[(rows["representation"] == rep) & (rows["k"] == "1")]
        metrics[f"{name}_ci"] = list(saebench.mean_ci(sel["correct"].tolist(), p["n_resamples"], 0.95, p["seed"])[1:])
    summary[f"{L}/{d}"] = {"layer": L, "dictionary": d, **metrics}
    tables.append(rows.drop(columns=["correct"]).assign(layer=L, dictionary=d, task=task["name"]))
table = pd.concat(tables, ignore_index=True).assign(**jobs.coordinates(node))
tensors.require_finite({"accuracy": table["accuracy"]}, f"saebench {task['name']}")
with store.write_artefact(out, node, device=device) as art:
    table.to_parquet(art.path("saebench.parquet"), index=False)
    table.to_csv(art.path("saebench.csv"), index=False)
    store.write_json_atomic(art.path("summary.json"), {"task": task["name"], "classes": [int(c) for c in classes],
                                                       "train_size": 2 * n_tr, "test_size": 2 * n_te,
                                                       "results": list(summary.values())})
    store.write_json_atomic(art.path("items.json"), items)
    art.record(saebench={k: {m: v for m, v in r.items() if m.endswith("top_1_test_accuracy")} for k, r in summary.items()})
print(pd.DataFrame(summary.values()).to_string())
