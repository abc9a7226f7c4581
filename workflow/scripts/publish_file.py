"""Rule publish_file (no key of its own): copy one file of a keyed artefact to its fixed path in the published tree
(data/figures/, data/README.md, data/LEDGER.md, data/ledger.*), after checking it against the artefact's manifest."""
import sys
from pathlib import Path

from saeflow.workflow import store

sys.stdout = sys.stderr = open(snakemake.log[0], "w")  # noqa: F821 (injected by Snakemake)
source = Path(snakemake.input[0]).parent  # noqa: F821  <store>/<step>/<key>
store.export_file(source, snakemake.params.file, Path(snakemake.output[0]))  # noqa: F821
print(f"published {source}/{snakemake.params.file} -> {snakemake.output[0]}")  # noqa: F821
