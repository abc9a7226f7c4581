# Stage report: figures (each a keyed artefact; `export` copies a file of one to a fixed human path) and the
# published tree: a keyed `publish` node per (preset, dataset) decides the layout, `publish_run`
# materialises data/<preset>/<dataset>/<timestamp>/ from it, `dataset_card` writes the card (saeflow.report).
# Feature pages: an `inspect` node per (preset, dataset, layer, dictionary) and an `inspect_index` per run.
# `export` copies figures to figures/ and flags them for `snakemake --report` (category: the stage, subcategory: the
# preset, caption: saeflow.report.captions); `publish_file` copies the published tree's fixed files.

report: "../report/workflow.rst"

FIGURE_EXPORTS = {p for p in PLAN.exports if p.startswith(FIGURES + "/")}


def describe_figure(path):
    from saeflow.report.captions import describe

    return describe(os.path.basename(path))


def figure_caption(path):
    from saeflow.report.captions import caption

    node = PLAN.nodes[os.path.basename(PLAN.exports[path][0])]
    return caption(os.path.basename(path), node.step, node.key)


# every recon node's headline numbers and the summary figure
rule recon_summary:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/recon_summary/{{key}}/{MANIFEST}",
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


# entropy vs depth, per-layer, ctx-sweep and H_pos figures of one run
rule locality_plots:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/locality_plots/{{key}}/{MANIFEST}",
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


# the cross-model entropy-vs-depth grid
rule entropy_grid:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/entropy_grid/{{key}}/{MANIFEST}",
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


# the probing, circuit, steering, autocorrelation and geometry figures of one run
rule eval_plots:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/eval_plots/{{key}}/{MANIFEST}",
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


# the feature page of one dictionary at one layer: latents table and cards (self-contained HTML)
rule inspect:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/inspect/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/inspect/{{key}}.log",
    benchmark:
        f"{BENCH}/inspect/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/inspect.py"


# the index of a run's feature pages, every dictionary and layer
rule inspect_index:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/inspect_index/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/inspect_index/{{key}}.log",
    benchmark:
        f"{BENCH}/inspect_index/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/inspect_index.py"

# the layout, run_config.json and bench.json of one published run
rule publish:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/publish/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/publish/{{key}}.log",
    benchmark:
        f"{BENCH}/publish/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/publish.py"


# the results ledger: every eval headline with its CI, provenance and verdict
rule ledger:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/ledger/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/ledger/{{key}}.log",
    benchmark:
        f"{BENCH}/ledger/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/ledger.py"

# the Hugging Face dataset card (data/README.md)
rule dataset_card:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/dataset_card/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/dataset_card/{{key}}.log",
    benchmark:
        f"{BENCH}/dataset_card/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/dataset_card.py"


rule export:
    input:
        lambda wildcards: ancient(manifest(PLAN.exports[wildcards.path][0])),
    output:
        report("{path}", caption="../report/figure.rst", category=lambda wildcards: describe_figure(wildcards.path)[0],
               subcategory=lambda wildcards: describe_figure(wildcards.path)[1]),
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
        # exactly the planned exports to the figures directory (figures and the ledger's page)
        path="|".join(re.escape(p) for p in FIGURE_EXPORTS) or "(?!)",
    params:
        file=lambda wildcards: PLAN.exports[wildcards.path][1],
        caption=lambda wildcards: figure_caption(wildcards.path),
    script:
        "../workflow/scripts/export.py"


rule publish_file:
    input:
        lambda wildcards: ancient(manifest(PLAN.exports[wildcards.path][0])),
    output:
        "{path}",
    log:
        f"{LOGS}/publish_file/{{path}}.log",
    benchmark:
        f"{BENCH}/publish_file/{{path}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: 1
    resources:
        mem_mb=200,
        runtime=5,
    wildcard_constraints:
        # exactly the planned fixed files of the published tree (data/figures/, data/README.md, data/LEDGER.md, ...)
        path="|".join(re.escape(p) for p in PLAN.exports if p not in FIGURE_EXPORTS) or "(?!)",
    params:
        file=lambda wildcards: PLAN.exports[wildcards.path][1],
    script:
        "../workflow/scripts/publish_file.py"


rule publish_run:
    input:
        lambda wildcards: ancient(manifest(PLAN[wildcards.key].path)),
    output:
        f"{DATA}/{{preset}}/{{dataset}}/.published/{{key}}.json",
    log:
        f"{LOGS}/publish_run/{{preset}}/{{dataset}}/{{key}}.log",
    benchmark:
        f"{BENCH}/publish_run/{{preset}}/{{dataset}}/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    wildcard_constraints:
        preset=r"[a-z0-9][a-z0-9._-]*",
        dataset=r"[a-z0-9][a-z0-9._-]*",
    script:
        "../workflow/scripts/publish_run.py"
