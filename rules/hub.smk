# Publishing: `snakemake sync_push` uploads data/ (the store, the published tree and the dataset card)
# to the Hugging Face dataset repo `sync.repo`, only what the repo lacks or has different, one commit per
# batch (saeflow.hub.sync; `saeflow sync pull` is the way back). Defined only when the config has a `sync`
# section. The token comes from the environment variable `sync.token_env` (default HF_TOKEN) or the
# huggingface_hub login; it never appears on the command line, in the log or in the output.
# A localrule without inputs or outputs: it runs when named (`snakemake all && snakemake sync_push`).

if config.get("sync", {}).get("repo"):

    rule sync_push:
        localrule: True
        params:
            python=sys.executable,
            repo=config["sync"]["repo"],
            data=str(Path(STORE).parent),
            flags=" ".join(
                [
                    "--revision", config["sync"].get("revision", "main"),
                    "--token-env", config["sync"].get("token_env", "HF_TOKEN"),
                ]
                + (["--prune"] if config["sync"].get("prune", False) else [])
                + ([] if config["sync"].get("xet", True) else ["--no-xet"])
            ),
        log:
            f"{LOGS}/sync_push.log",
        benchmark:
            f"{BENCH}/sync_push.tsv"
        shell:
            "{params.python} -m saeflow.cli sync push --repo {params.repo:q} --data {params.data:q} {params.flags}"
            " > {log} 2>&1"
