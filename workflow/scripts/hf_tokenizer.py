"""Rule hf_tokenizer: the preset's Hugging Face tokenizer at its pinned revision (or local copy), saved with
save_pretrained; records the token every window starts with (saeflow.models.hf.bos_id)."""
from saeflow.models import hf, lm
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
spec = {**p, "local_dir": lm.local_model_dirs().get(f"{p['hf_id']}@{p['revision']}")}
with store.write_artefact(out, node) as art:
    tok = hf.load_tokenizer(spec)
    tok.save_pretrained(str(art.path("tokenizer/x").parent))
    art.record(bos_id=hf.bos_id(spec, tok), vocab_size=len(tok))
print(f"{p['hf_id']}@{p['revision']}: vocab {len(tok)}, bos {hf.bos_id(spec, tok)}")
