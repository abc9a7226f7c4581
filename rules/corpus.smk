# Raw inputs -> documents -> tokenised windows.


rule corpus:
    output:
        f"{STORE}/corpus/{{key}}/manifest.json",
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


rule windows:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/windows/{{key}}/manifest.json",
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
