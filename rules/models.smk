# Stage models: the preset's tokenizer and language model, trained as DAG steps (embedded) or resolved
# from the hub (hf) (saeflow.models).


# the embedded presets' byte-level BPE, trained on the preset's corpus
rule tokenizer:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/tokenizer/{{key}}/{MANIFEST}",
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


# the embedded HookedTransformer, trained; held-out loss vs unigram entropy
rule train_lm:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/train_lm/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/train_lm/{{key}}.log",
    benchmark:
        f"{BENCH}/train_lm/{{key}}.tsv"
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


# a hub preset's tokenizer at its pinned revision
rule hf_tokenizer:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/hf_tokenizer/{{key}}/{MANIFEST}",
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


# a hub preset's model resolved (config checked, source.json)
rule hf_model:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/hf_model/{{key}}/{MANIFEST}",
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


# a preset's model re-initialised (seeded), the randomized-model control
rule randomize_lm:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/randomize_lm/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/randomize_lm/{{key}}.log",
    benchmark:
        f"{BENCH}/randomize_lm/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/randomize_lm.py"
