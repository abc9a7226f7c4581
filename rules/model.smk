# The preset's tokenizer and language model: trained as DAG steps (embedded) or resolved from the hub (hf).


rule tokenizer:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/tokenizer/{{key}}/manifest.json",
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
        f"{STORE}/lm/{{key}}/manifest.json",
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
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/train_lm.py"


rule hf_tokenizer:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/hf_tokenizer/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/hf_tokenizer/{{key}}.log",
    benchmark:
        f"{BENCH}/hf_tokenizer/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/hf_tokenizer.py"


rule hf_model:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/hf_model/{{key}}/manifest.json",
    params:
        node=node_of,
    log:
        f"{LOGS}/hf_model/{{key}}.log",
    benchmark:
        f"{BENCH}/hf_model/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/hf_model.py"
