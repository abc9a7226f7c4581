# Evaluations of trained dictionaries.


rule recon:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/recon/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/recon/{{key}}.log",
    benchmark:
        f"{BENCH}/recon/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/recon.py"


rule probe:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/probe/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/probe/{{key}}.log",
    benchmark:
        f"{BENCH}/probe/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/probe.py"


rule autocorr:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/autocorr/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/autocorr/{{key}}.log",
    benchmark:
        f"{BENCH}/autocorr/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/autocorr.py"


rule geometry:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/geometry/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/geometry/{{key}}.log",
    benchmark:
        f"{BENCH}/geometry/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/geometry.py"
