"""Rule entropy_grid: the cross-model grid of entropy vs depth (one panel per preset, datasets side by side)."""
import pandas as pd

from saeflow.evals import locality
from saeflow.report import entropy_figures
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
per_latent, token, ctx_len = [], [], {}
for role, path in sorted(inputs.items()):
    m = store.read_manifest(path)
    cfg = store.read_json(path / "config.json")
    lab, site = m["labels"], m["params"]["site"]
    n_layers = m["params"]["n_layers"]
    ctx_len[lab["preset"]] = cfg["ctx_len"]
    for L in m["params"]["layers"]:
        stem = path / f"entropy_comparison_{site}_layer{L}"
        f = locality.mean_entropy_per_latent(pd.read_parquet(f"{stem}.parquet"))
        per_latent.append(f.assign(preset=lab["preset"], dataset=lab["dataset"], layer=L, n_layers=n_layers))
        w = pd.read_parquet(f"{stem}_windows.parquet")
        token.append(pd.DataFrame([{"preset": lab["preset"], "dataset": lab["dataset"], "layer": L, "n_layers": n_layers,
                                    "token_vector_entropy": w["token_vector_entropy"].mean()}]))
per_latent, token = pd.concat(per_latent, ignore_index=True), pd.concat(token, ignore_index=True)
with store.write_artefact(out, node) as art:
    per_latent.to_parquet(art.path("per_latent_mean_entropy.parquet"), index=False)
    token.to_parquet(art.path("token_vector_entropy.parquet"), index=False)
    entropy_figures.entropy_grid_figure(per_latent, token, art.path("entropy_vs_depth_grid.png"), kind=node["params"]["kind"],
                             ctx_len=ctx_len)
