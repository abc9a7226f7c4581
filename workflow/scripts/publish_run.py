"""Rule publish_run (an export, not a keyed node): materialise the run directory of a publish artefact
and write its marker last, so an interrupted export leaves no marker."""
import json
import sys
from pathlib import Path

from saeflow import publish

log = open(snakemake.log[0], "w")  # noqa: F821
sys.stdout = sys.stderr = log
run_dir = publish.materialise(Path(snakemake.input[0]), Path(snakemake.params.store),  # noqa: F821
                              Path(snakemake.params.data_root))  # noqa: F821
publish.write_text_atomic(snakemake.output[0], json.dumps({"run_dir": str(run_dir), "publish_key": Path(snakemake.input[0]).name}) + "\n")  # noqa: F821
print(f"published {run_dir}")
