# Stage evals: reconstruction, feature-influence locality (entropy vs depth, ctx sweep, top contexts,
# H_pos), probing, steering, circuits, comparisons, autocorrelation, geometry, auto-interp (saeflow.evals).


# FVU/EV, L0, dead/dense fractions, spliced CE and KL with bootstrap CIs
rule recon:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/recon/{{key}}/{MANIFEST}",
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
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/recon.py"


# feature-influence entropy of every active latent per window and layer
rule entropy_vs_depth:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/entropy_vs_depth/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/entropy_vs_depth/{{key}}.log",
    benchmark:
        f"{BENCH}/entropy_vs_depth/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/entropy_vs_depth.py"


# per-latent entropy of one fixed text vs context length
rule ctxlen_sweep:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/ctxlen_sweep/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/ctxlen_sweep/{{key}}.log",
    benchmark:
        f"{BENCH}/ctxlen_sweep/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/ctxlen_sweep.py"


# top-activating events per latent (at most one per window)
rule top_contexts:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/top_contexts/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/top_contexts/{{key}}.log",
    benchmark:
        f"{BENCH}/top_contexts/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/top_contexts.py"


# H_pos on the window ending at each top event, per context length
rule h_pos:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/h_pos/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/h_pos/{{key}}.log",
    benchmark:
        f"{BENCH}/h_pos/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/h_pos.py"


# sparse probing of dictionary latents vs the raw-activation baseline
rule probe:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/probe/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/probe/{{key}}.log",
    benchmark:
        f"{BENCH}/probe/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/probe.py"


# sparse feature-circuit faithfulness vs random latent sets, and its ablation vs seeded nulls
rule circuit:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/circuit/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/circuit/{{key}}.log",
    benchmark:
        f"{BENCH}/circuit/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/circuit.py"


# latents of one preset's dictionary that another's lacks (activation correlation)
rule feature_diff:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/feature_diff/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/feature_diff/{{key}}.log",
    benchmark:
        f"{BENCH}/feature_diff/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/feature_diff.py"


# head-to-head verdicts of two dictionaries: paired bootstrap of every shared headline
rule compare:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/compare/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/compare/{{key}}.log",
    benchmark:
        f"{BENCH}/compare/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/compare.py"


# a latent's direction added over an alpha sweep vs diff-of-means and random controls
rule steer:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/steer/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/steer/{{key}}.log",
    benchmark:
        f"{BENCH}/steer/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/steer.py"


# per-latent activation autocorrelation, top examples, peak strips
rule autocorr:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/autocorr/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/autocorr/{{key}}.log",
    benchmark:
        f"{BENCH}/autocorr/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/autocorr.py"


# decoder cosine vs |dH_pos| with a permutation null
rule geometry:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/geometry/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/geometry/{{key}}.log",
    benchmark:
        f"{BENCH}/geometry/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
    script:
        "../workflow/scripts/geometry.py"


# explanations of sampled latents scored by detection and fuzzing, with a shuffled-explanation control
rule autointerp:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/autointerp/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/autointerp/{{key}}.log",
    benchmark:
        f"{BENCH}/autointerp/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/autointerp.py"


# SAEBench's sparse probing of one task: balanced one-vs-rest probes of every class, SAE vs raw
rule saebench:
    input:
        unpack(upstream_of),
    output:
        f"{STORE}/saebench/{{key}}/{MANIFEST}",
    params:
        node=node_of,
    log:
        f"{LOGS}/saebench/{{key}}.log",
    benchmark:
        f"{BENCH}/saebench/{{key}}.tsv"
    conda:
        "../envs/saeflow.yaml"
    threads: threads_of
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
        gpu_mem_mb=res("gpu_mem_mb"),
    script:
        "../workflow/scripts/saebench.py"
