"""Rule windows: tokenise a dataset, split documents train/eval, cut seeded ctx_len windows of each."""
import numpy as np
import pandas as pd
from safetensors.numpy import save_file

from saeflow.data import tokenizer, windows
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
docs = pd.read_parquet(inputs["corpus"] / "docs.parquet")
tok = tokenizer.load_tokenizer(inputs["tokenizer"] / "tokenizer")
# A hub tokenizer's manifest names the token windows start with (EOS where it has no BOS, e.g. Qwen2).
bos = store.read_manifest(inputs["tokenizer"]).get("bos_id", tok.bos_token_id)
token_docs = tokenizer.encode_documents(tok, docs["text"].tolist())
text_ok = windows.window_filter(**p.get("window_filter", {}))
train_idx, eval_idx = windows.split_documents(len(token_docs), p["eval_fraction"], p["seed"],
                                              docs["label"].to_numpy() if p.get("stratify") else None)
tensors, counts = {}, {}
for split, idx, n in (("train", train_idx, p["n_train"]), ("eval", eval_idx, p["n_eval"])):
    w = windows.cut_windows([token_docs[i] for i in idx], p["ctx_len"], n, p["seed"] + (split == "eval"), bos,
                           accept=(lambda body: text_ok(tok.decode(body))) if text_ok else None)
    tensors[f"{split}_tokens"] = w["tokens"]
    tensors[f"{split}_doc_id"] = docs["doc_id"].to_numpy()[idx][w["doc_idx"]].astype(np.int64)
    tensors[f"{split}_start_idx"] = w["start_idx"]
    tensors[f"{split}_label"] = docs["label"].to_numpy()[idx][w["doc_idx"]].astype(np.int64)
    counts[split] = {"n_docs": int(len(idx)), "n_tokens": int(sum(len(token_docs[i]) for i in idx)),
                     "unigram_entropy_bits": tokenizer.unigram_entropy_bits([token_docs[i] for i in idx], len(tok))}
with store.write_artefact(out, node) as art:
    save_file(tensors, str(art.path("windows.safetensors")))
    art.record(splits=counts, bos_id=int(bos), vocab_size=len(tok))
print(counts)
