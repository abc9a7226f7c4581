# Dictionary training (sparsify / sae-lens) over cached activations.


rule train_dict:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/dict/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/dict/{{key}}.log",
    benchmark:
        f"{BENCH}/dict/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/train_dict.py"


rule load_dict:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/pretrained/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/pretrained/{{key}}.log",
    benchmark:
        f"{BENCH}/pretrained/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/load_dict.py"
