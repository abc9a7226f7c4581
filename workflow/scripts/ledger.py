"""Rule ledger: the results ledger of the plan's eval nodes (saeflow.report.ledger): ledger.parquet, ledger.csv and
LEDGER.md (exported to data/), one row per (preset, dataset, layer, dictionary, eval) with its headline, CI,
provenance and verdict against the config's reference ranges."""
from saeflow.report import ledger
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
evals = {r: d for r, d in inputs.items() if r.startswith("e")}
dicts = {r: d for r, d in inputs.items() if r.startswith("d")}
df = ledger.ledger_rows(evals, dicts, p, p["references"])
with store.write_artefact(out, node) as art:
    df.to_parquet(art.path("ledger.parquet"), index=False)
    df.to_csv(art.path("ledger.csv"), index=False)
    art.path("LEDGER.md").write_text(ledger.markdown(df))
    art.path("ledger.html").write_text(ledger.html(df))
    art.record(n_rows=len(df), verdicts=df["verdict"].value_counts().to_dict())
print(df[["id", "metric", "value", "lo", "hi", "verdict"]].to_string())
