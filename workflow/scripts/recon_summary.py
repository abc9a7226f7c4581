"""Rule recon_summary: one table of every recon node's headline numbers, and the summary figure."""
import pandas as pd

from saeflow.report import recon_figures
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
rows = []
for role, path in sorted(inputs.items()):
    m = store.read_manifest(path)
    metrics = store.read_json(path / "metrics.json")
    row = dict(m["labels"], recon_key=m["key"])
    for name in ("fvu", "ev", "l0", "ce_recovered", "kl", "ce_clean", "ce_dict", "ce_zero"):
        row.update({name: metrics[name]["value"], f"{name}_lo": metrics[name]["lo"], f"{name}_hi": metrics[name]["hi"]})
    row.update(dead_frac=metrics["dead_frac"], dense_frac=metrics["dense_frac"])
    rows.append(row)
df = pd.DataFrame(rows).sort_values(["preset", "dataset", "dictionary", "layer"]).reset_index(drop=True)
with store.write_artefact(out, node) as art:
    df.to_parquet(art.path("recon_summary.parquet"), index=False)
    df.to_csv(art.path("recon_summary.csv"), index=False)
    recon_figures.recon_summary_figure(df, art.path("recon_summary.png"))
print(df.to_string())
