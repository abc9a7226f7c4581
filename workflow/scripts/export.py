"""Rule export (no key of its own): copy one figure of a keyed artefact to its fixed human path in figures/, after
checking the file against the artefact's manifest, so an export is always a verified copy (the rule flags it for
`snakemake --report`)."""
import sys
from pathlib import Path

from saeflow.workflow import store

sys.stdout = sys.stderr = open(snakemake.log[0], "w")  # noqa: F821 (injected by Snakemake)
source = Path(snakemake.input[0]).parent  # noqa: F821  <store>/<step>/<key>
store.export_file(source, snakemake.params.file, Path(snakemake.output[0]))  # noqa: F821
print(f"exported {source}/{snakemake.params.file} -> {snakemake.output[0]}")  # noqa: F821
