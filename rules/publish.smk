# The published tree (saeflow.publish): a keyed `publish` node per (preset, dataset) decides the layout;
# `publish_run` materialises data/<preset>/<dataset>/<timestamp>/ from it; `dataset_card` writes the card.


rule publish:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/publish/{{key}}/manifest.json",
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


rule dataset_card:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/card/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/card/{{key}}.log",
    benchmark:
        f"{BENCH}/card/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/dataset_card.py"
