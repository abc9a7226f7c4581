# Input, params and resource functions shared by the rules; all look the job's node up in PLAN by key.


def node_of(wildcards):
    return PLAN[wildcards.key].to_dict()


def upstream_of(wildcards):
    # Stored artefacts are immutable and addressed by key, so their mtimes carry no information:
    # `ancient` stops Snakemake from comparing them (a copy or a clone gives new mtimes).
    return {role: ancient(path) for role, path in PLAN.input_paths(wildcards.key).items()}


def res(name):
    """A resource of the job's node, scaled by `attempt` so retries ask for more."""
    scale = name in ("mem_mb", "runtime")
    return lambda wildcards, attempt: PLAN[wildcards.key].resources[name] * (attempt if scale else 1)


def threads_of(wildcards):
    return PLAN[wildcards.key].resources["threads"]
