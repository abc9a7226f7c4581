"""Rule corpus: materialise one dataset's documents as Parquet (doc_id, source, text, label); a mixture reads its
parts' corpus artefacts."""
import pandas as pd

from saeflow.data import corpus
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821 (injected by Snakemake)
p = node["params"]
meta = {}
if p["source"] == "stdlib":
    docs = corpus.stdlib_documents(p["packages"], p.get("max_files"), p.get("max_bytes", 200_000))
elif p["source"] == "synthetic":
    docs, meta = corpus.synthetic_documents(
        p["n_docs"], p["doc_len"], p["seed"], lag=p["lag"], n_topics=p["n_topics"], n_filler=p["n_filler"],
        n_topic_words=p["n_topic_words"], p_lag=p["p_lag"], p_topic=p["p_topic"])
elif p["source"] == "mixture":
    parts = []
    for name in p["parts"]:
        df = pd.read_parquet(inputs[f"part_{name}"] / "docs.parquet")
        parts.append([corpus.Document(int(i), s, t, int(z)) for i, s, t, z in
                      zip(df["doc_id"], df["source"], df["text"], df["label"])])
    docs = corpus.mix_documents(parts, p["parts"], p["max_docs_per_part"], p["seed"], p["balance"])
    meta = {"parts": {str(i): name for i, name in enumerate(p["parts"])}}
else:
    docs = corpus.load_hf_documents(p["repo"], p["revision"], p["split"], text_column=p["text_column"], label_column=p.get("label_column"),
                                    local_dir=node["runtime"].get("local_dir"), max_docs=p.get("max_docs"),
                                    config=p.get("config"), data_files=p.get("data_files"))
    docs = corpus.group_rows(docs, p.get("rows_per_doc", 1), p.get("doc_start_pattern"))
df = pd.DataFrame({"doc_id": [d.doc_id for d in docs], "source": [d.source for d in docs],
                   "text": [d.text for d in docs], "label": [d.label for d in docs]})
with store.write_artefact(out, node) as art:
    df.to_parquet(art.path("docs.parquet"), index=False)
    if meta and p["source"] == "synthetic":
        store.write_json_atomic(art.path("synthetic_meta.json"), meta)
    elif meta:
        store.write_json_atomic(art.path("mixture.json"), meta)
    art.record(n_docs=len(df), n_chars=int(df["text"].str.len().sum()))
print(f"{len(df)} documents, {df['text'].str.len().sum()} characters")
