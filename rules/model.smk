# The embedded preset's tokenizer and language model, trained as DAG steps.


rule tokenizer:
    input:
        unpack(upstream_of),
    output:
        directory(f"{STORE}/tokenizer/{{key}}"),
    params:
        node=node_of,
    log:
        f"{LOGS}/tokenizer/{{key}}.log",
    benchmark:
        f"{BENCH}/tokenizer/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/tokenizer.py"


rule train_lm:
    input:
        unpack(upstream_of),
    output:
        directory(f"{STORE}/lm/{{key}}"),
    params:
        node=node_of,
    log:
        f"{LOGS}/lm/{{key}}.log",
    benchmark:
        f"{BENCH}/lm/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
    script:
        "../workflow/scripts/train_lm.py"
