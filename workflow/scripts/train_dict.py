"""Rule dict: train one dictionary on cached activations; save sae-lens + native formats; quality gates."""
import pandas as pd

from saeflow.data import activations
from saeflow.dictionaries import formats, quality, training
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
cache = inputs["cache"]
batches = activations.batch_stream(cache, p["hook_in"], p["hook_out"], p["batch_size"], p["seed"])
check_x = activations.first_rows(cache, p["hook_in"], quality.CHECK_TOKENS)
check_y = activations.first_rows(cache, p["hook_out"], quality.CHECK_TOKENS) if p["hook_out"] else None
with store.write_artefact(out, node, device=device) as art:
    res = training.train_dictionary(
        p["kind"], batches, d_in=p["d_in"], d_sae=p["d_sae"], k=p.get("k"), n_tokens=p["train_tokens"],
        batch_size=p["batch_size"], lr=p["lr"], seed=p["seed"], out_dir=art.dir, hook_name=p["hook_in"],
        hook_name_out=p["hook_out"], check_batch=(check_x, check_y), device=device,
        l1_coefficient=p.get("l1_coefficient"), metadata=p["metadata"])
    pd.DataFrame(res.curve).to_csv(art.path("training_curve.csv"), index=False)
    sae = formats.load_saelens(res.saelens_dir)
    gates = quality.evaluate_gates(sae, check_x, check_y, p["gates"])
    art.record(gates=gates, fidelity=res.fidelity,
               formats={"saelens": res.saelens_dir.relative_to(art.dir).as_posix(),
                        "native": res.native_dir.relative_to(art.dir).as_posix() if res.native_dir else None})
    print("gates:", gates)
    if not gates["passed"] and p["gates"]["fail"]:
        raise RuntimeError(f"quality gates failed (gates.fail is true): {gates}")
