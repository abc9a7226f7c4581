# Dictionary training (sparsify / sae-lens) over cached activations.


rule train_dict:
    input:
        unpack(upstream_of),
    output:
        directory(f"{STORE}/dict/{{key}}"),
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
    script:
        "../workflow/scripts/train_dict.py"
