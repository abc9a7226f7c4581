# Evaluations of trained dictionaries.


rule recon:
    input:
        unpack(upstream_of),
    output:
        directory(f"{STORE}/recon/{{key}}"),
    params:
        node=node_of,
    log:
        f"{LOGS}/recon/{{key}}.log",
    benchmark:
        f"{BENCH}/recon/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
    script:
        "../workflow/scripts/recon.py"
