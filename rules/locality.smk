# Feature-influence locality: entropy vs depth, context-length sweep, top contexts, H_pos.


rule entropy_vs_depth:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/entropy/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/entropy/{{key}}.log",
    benchmark:
        f"{BENCH}/entropy/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/entropy_vs_depth.py"


rule ctxlen_sweep:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/ctxlen_sweep/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/ctxlen_sweep/{{key}}.log",
    benchmark:
        f"{BENCH}/ctxlen_sweep/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/ctxlen_sweep.py"


rule top_contexts:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/events/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/events/{{key}}.log",
    benchmark:
        f"{BENCH}/events/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/top_contexts.py"


rule h_pos:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/h_pos/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/h_pos/{{key}}.log",
    benchmark:
        f"{BENCH}/h_pos/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/h_pos.py"
