# Activation cache: one forward per batch, every site of the preset, sharded safetensors.


rule cache_activations:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/cache/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/cache/{{key}}.log",
    benchmark:
        f"{BENCH}/cache/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/cache_activations.py"
