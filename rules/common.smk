# Input, params and resource functions shared by the rules; all look the job's node up in PLAN by key.
# A rule's output is its artefact's manifest, `<store>/<step>/<key>/manifest.json`: the manifest is the last
# file renamed into place, so "the output exists" means "the artefact is complete" (a directory without
# its manifest is rebuilt, not trusted).


def manifest(path):
    return f"{path}/{MANIFEST}"


def node_of(wildcards):
    return PLAN[wildcards.key].to_dict()


def upstream_of(wildcards):
    # Stored artefacts are immutable and addressed by key, so their mtimes carry no information:
    # `ancient` stops Snakemake from comparing them (a copy or a clone gives new mtimes).
    return {role: ancient(manifest(path)) for role, path in PLAN.input_paths(wildcards.key).items()}


def res(name):
    """A resource of the job's node, scaled by `attempt` so retries ask for more."""
    scale = name in ("mem_mb", "runtime")
    return lambda wildcards, attempt: PLAN[wildcards.key].resources[name] * (attempt if scale else 1)


def threads_of(wildcards):
    return PLAN[wildcards.key].resources["threads"]


# A store may be shared by several checkouts or machines (saeflow.workflow.store). Snakemake deletes a job's
# existing outputs before running it (its DAG saw them missing; another run has finished them since) and
# the outputs of a failed job; for a complete store artefact either would delete another run's finished
# work. The job itself finds such an artefact complete and exits without recomputing (saeflow.workflow.jobs.start),
# and a complete artefact is never partial (atomic rename), so these outputs are left alone.
import snakemake.jobs as _smk_jobs

_STORE_PREFIX = os.path.abspath(STORE) + os.sep


def _is_store_manifest(f):
    return os.path.basename(str(f)) == MANIFEST and os.path.abspath(str(f)).startswith(_STORE_PREFIX)


if not getattr(_smk_jobs.Job, "_saeflow_keeps_store", False):
    _remove_existing_output = _smk_jobs.Job.remove_existing_output
    _cleanup = _smk_jobs.Job.cleanup

    async def _remove_existing_output_keep_store(self):
        # The job's log is kept too: it appends (saeflow.workflow.jobs.start), so a second run's "already complete"
        # line follows the first run's log instead of deleting it.
        if self.output and all(_is_store_manifest(f) for f in self.output):
            return
        await _remove_existing_output(self)

    async def _cleanup_keep_store(self, skip_outputs):
        await _cleanup(self, [*skip_outputs, *(f for f in self.output if _is_store_manifest(f))])

    _smk_jobs.Job.remove_existing_output = _remove_existing_output_keep_store
    _smk_jobs.Job.cleanup = _cleanup_keep_store
    _smk_jobs.Job._saeflow_keeps_store = True
