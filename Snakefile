# saeflow: content-addressed Snakemake workflow for sparse-dictionary experiments.
# Keys (and so output paths) are computed here at parse time by saeflow.workflow.plan; see README and
# ../shared/spec/architecture.md. Rules live in rules/*.smk and stay thin.
import os
import re
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
# Jobs import the library from this checkout (not an installed copy), so keys and code agree.
os.environ["PYTHONPATH"] = os.pathsep.join([SRC] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

from saeflow.workflow.config import ConfigError, check_config_file, validate
from saeflow.workflow.plan import build_plan
from saeflow.workflow.steps import LOCAL as LOCAL_STEPS

# A --configfile replaces the embedded default instead of being merged into it.
if not workflow.overwrite_configfiles:
    workflow.configfile(str(Path(workflow.basedir) / "config" / "config.yaml"))

# saeflow's own validation (the one the CLI runs), not snakemake.utils.validate: that one accepts 150.0
# as an integer and, on error, prints jsonschema's dump of the schema. Snakemake has loaded the files
# itself, keeping the last of duplicated keys; check_config_file refuses them. workflow.configfiles holds
# the --configfile files, else the default added just above. A config error is one line on stderr and
# exit status 1 (a raised exception would be shown with its location and traceback).
try:
    for _configfile in workflow.configfiles:
        check_config_file(_configfile)
    validate(config)
    PLAN = build_plan(config, workflow.basedir)  # a few checks need the plan's keys (feature_diff windows)
except ConfigError as e:
    sys.exit(f"error: {e}")
STORE = PLAN.store
DATA = PLAN.data_root
LOGS = str(Path(STORE).parent / "logs")
BENCH = str(Path(STORE).parent / "benchmarks")
FIGURES = config.get("figures_dir", "figures")
MANIFEST = "manifest.json"
KEY = "[0-9a-f]{20}"


include: "rules/common.smk"


wildcard_constraints:
    key=KEY,


# One rules file per stage, in pipeline order; every rule is declared once in saeflow.workflow.steps.
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/dictionaries.smk"
include: "rules/evals.smk"
include: "rules/report.smk"
include: "rules/hub.smk"


# Light steps (tables, figures, copies) run in the main process, never as cluster jobs (the registry's
# `local` flag).
workflow.localrules("all", *(name for name in LOCAL_STEPS if name != "sync_push"))


# `all` asks for every planned artefact, not only the exports: an artefact removed from the store (by
# `saeflow verify --remove`, or by hand) is rebuilt even where its consumers are present.
rule all:
    input:
        list(PLAN.exports),
        list(PLAN.published),
        [manifest(n.path) for n in PLAN.nodes.values()],
    default_target: True
