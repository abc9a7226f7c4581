# Stage data: raw inputs -> documents -> tokenised windows -> cached activations (saeflow.data).


# one dataset's documents as Parquet (stdlib, synthetic, Hugging Face)
rule corpus:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/corpus/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/corpus/{{key}}.log",
    benchmark:
        f"{BENCH}/corpus/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/corpus.py"


# tokenised documents split train/eval, seeded ctx_len windows starting with BOS
rule windows:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/windows/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/windows/{{key}}.log",
    benchmark:
        f"{BENCH}/windows/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/windows.py"


# every site of a preset cached from one forward per batch, sharded
rule cache_activations:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/cache_activations/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/cache_activations/{{key}}.log",
    benchmark:
        f"{BENCH}/cache_activations/{{key}}.tsv"
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
