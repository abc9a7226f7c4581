"""Rule dataset_card: the Hugging Face dataset card (README.md with YAML front matter) generated from DATASET.md,
the runs of this plan and its results ledger; exported to data/README.md."""
from pathlib import Path

from saeflow.report import publish
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
runs = []
for role, path in sorted(inputs.items()):
    if role == "ledger":
        continue
    m = store.read_manifest(path)
    runs.append({**{k: m["labels"][k] for k in ("preset", "dataset")}, "timestamp": m["timestamp"],
                 "publish_key": m["key"], "dests": sorted(row["dest"] for row in store.read_json(path / "layout.json"))})
source = Path(snakemake.scriptdir).parents[1] / "DATASET.md"  # noqa: F821
if store.sha256_file(source) != node["inputs"]["DATASET.md"]:
    raise RuntimeError("DATASET.md changed after the DAG was planned; rerun snakemake")
dataset_md = source.read_text()
with store.write_artefact(out, node) as art:
    ledger_md = (inputs["ledger"] / "LEDGER.md").read_text() if "ledger" in inputs else None
    art.path("README.md").write_text(publish.dataset_card(dataset_md, sorted(runs, key=lambda r: (r["preset"], r["dataset"])),
                                                          p, ledger_md))
print(f"card for {len(runs)} runs")
