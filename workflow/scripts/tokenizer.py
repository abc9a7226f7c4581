"""Rule tokenizer: byte-level BPE trained on the preset's training corpus."""
import pandas as pd

from saeflow.data import tokenizer
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
texts = pd.read_parquet(inputs["corpus"] / "docs.parquet")["text"].tolist()
with store.write_artefact(out, node) as art:
    tokenizer.train_bpe(texts, node["params"]["vocab_size"], art.path("tokenizer"))
    art.record(vocab_size=len(tokenizer.load_tokenizer(art.dir / "tokenizer")))
