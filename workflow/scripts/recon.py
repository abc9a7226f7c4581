"""Rule recon: FVU/EV, L0, dead/dense fractions, spliced CE and KL with bootstrap CIs on eval windows."""
import pandas as pd
import torch
from safetensors.numpy import load_file

from saeflow import tensors
from saeflow.dictionaries import codes, formats
from saeflow.evals import recon
from saeflow.models import lm
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
model = lm.load_model(inputs["lm"] / "model", device)
manifest = store.read_manifest(inputs["dict"])
sae = formats.load_saelens(inputs["dict"] / manifest["formats"]["saelens"]).to(device)
tokens = torch.as_tensor(load_file(str(inputs["windows"] / "windows.safetensors"))["eval_tokens"])
summary, per_seq = recon.evaluate_recon(
    model, sae, tokens, p["hook_in"], p["hook_out"], batch_size=p["batch_size"], exclude_bos=p["exclude_bos"],
    n_resamples=p["n_resamples"], confidence=p["confidence"], seed=p["seed"],
    encode=lambda x: codes.encode(sae, x), decode=lambda f: codes.decode(sae, f),
    skip=(lambda x: codes.skip_term(sae, x)) if getattr(sae, "W_skip", None) is not None else None, progress=True)
tensors.require_finite({k: [v["value"], v["lo"], v["hi"]] for k, v in summary.items() if isinstance(v, dict) and "value" in v},
                       f"recon of {node['labels']}")
with store.write_artefact(out, node, device=device) as art:
    store.write_json_atomic(art.path("metrics.json"), summary)
    pd.DataFrame(per_seq).assign(**jobs.coordinates(node)).to_parquet(art.path("per_seq.parquet"), index=False)
print({k: v for k, v in summary.items() if isinstance(v, dict) and "value" in v})
