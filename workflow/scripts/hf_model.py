"""Rule hf_model: resolve the preset's Hugging Face model (config.json at the pinned revision, or the local
copy), check its shape against the config, and write `model/source.json`, from which every downstream job
loads it through TransformerLens (saeflow.models.lm.load_model -> saeflow.models.hf.load_hooked). No weights are copied."""
import json
from pathlib import Path

from saeflow.models import hf, lm
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = {k: v for k, v in node["params"].items() if k != "source"}
local_dir = lm.local_model_dirs().get(f"{p['hf_id']}@{p['revision']}")
spec = hf.check_spec({**p, "local_dir": local_dir})
if local_dir is None:
    from huggingface_hub import hf_hub_download

    config_dir = Path(hf_hub_download(p["hf_id"], "config.json", revision=p["revision"])).parent
else:
    config_dir = Path(local_dir)
facts = hf.model_facts(config_dir)
for k in ("n_layers", "d_model"):
    if facts[k] != p[k]:
        raise ValueError(f"presets.{node['labels']['preset']}.model.{k} is {p[k]}, but {p['hf_id']}@{p['revision']} "
                         f"has {k} = {facts[k]}")
with store.write_artefact(out, node) as art:
    source = {k: v for k, v in spec.items() if k != "local_dir"}
    art.path("model/source.json").write_text(json.dumps(source, indent=2, sort_keys=True))
    art.record(facts=facts, official_tl_name=hf.official_tl_name(spec))
print(json.dumps(facts))
