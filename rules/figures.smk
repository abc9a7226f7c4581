# Figures: a keyed artefact holds each figure; `export` copies a file of an artefact to a fixed human path.


rule recon_summary:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/recon_summary/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/recon_summary/{{key}}.log",
    benchmark:
        f"{BENCH}/recon_summary/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/recon_summary.py"


rule locality_plots:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/locality_plots/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/locality_plots/{{key}}.log",
    benchmark:
        f"{BENCH}/locality_plots/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/locality_plots.py"


rule entropy_grid:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/entropy_grid/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/entropy_grid/{{key}}.log",
    benchmark:
        f"{BENCH}/entropy_grid/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/entropy_grid.py"


rule eval_plots:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/eval_plots/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/eval_plots/{{key}}.log",
    benchmark:
        f"{BENCH}/eval_plots/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/eval_plots.py"


rule export:
    input:
        lambda wildcards: ancient(manifest(PLAN.exports[wildcards.path][0])),
    output:
        "{path}",
    log:
        f"{LOGS}/export/{{path}}.log",
    benchmark:
        f"{BENCH}/export/{{path}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: 1
    resources:
        mem_mb=200,
        runtime=5,
    wildcard_constraints:
        # exactly the planned export paths (figures/, data/figures/, data/README.md)
        path="|".join(re.escape(p) for p in PLAN.exports) or "(?!)",
    params:
        file=lambda wildcards: PLAN.exports[wildcards.path][1],
    script:
        "../workflow/scripts/export.py"
