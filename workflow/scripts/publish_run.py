"""Rule publish_run (an export, not a keyed node): materialise the run directory of a publish artefact
and write its marker last, so an interrupted export leaves no marker."""
import sys
from pathlib import Path

from saeflow.report import publish
from saeflow.workflow import store

log = open(snakemake.log[0], "w")  # noqa: F821
sys.stdout = sys.stderr = log
publish_dir = Path(snakemake.input[0]).parent  # noqa: F821  <store>/publish/<key>
marker = Path(snakemake.output[0])  # noqa: F821  <data_root>/<preset>/<dataset>/.published/<key>.json
run_dir = publish.materialise(publish_dir, publish_dir.parents[1], marker.parents[3])
store.write_json_atomic(marker, {"run_dir": str(run_dir), "publish_key": publish_dir.name})
print(f"published {run_dir}")
