# Stage dictionaries: trained on cached activations (sparsify / sae-lens) or loaded pretrained, every
# conversion fidelity-checked and gated (saeflow.dictionaries).


# a dictionary trained on cached activations, converted, fidelity-checked, gated
rule train_dict:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/train_dict/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/train_dict/{{key}}.log",
    benchmark:
        f"{BENCH}/train_dict/{{key}}.tsv"
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


# a pretrained dictionary loaded, converted, fidelity-checked, gated
rule load_dict:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/load_dict/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/load_dict/{{key}}.log",
    benchmark:
        f"{BENCH}/load_dict/{{key}}.tsv"
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
