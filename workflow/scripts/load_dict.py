"""Rule load_dict (step `pretrained`): load a pretrained dictionary with its format's own loader, convert it
to sae-lens format, and check encode fidelity on this preset's cached activations (a failure fails the job)."""
from saeflow.data import activations
from saeflow.dictionaries import formats, pretrained, quality
from saeflow.models import hf
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
spec = {k: p[k] for k in ("format", "release", "id", "revision")} | {"local_dir": node["runtime"].get("local_dir")}
x = activations.first_rows(inputs["cache"], p["hook_in"], p["fidelity_tokens"])
with store.write_artefact(out, node, device=jobs.device_of(node)) as art:
    res = pretrained.load_pretrained(spec, p["layer"], p["hook_in"], x, art.dir, device=jobs.device_of(node))
    facts = res["describe"]
    if facts["d_in"] != p["d_in"]:
        raise ValueError(f"dictionary {pretrained.dict_id(spec, p['layer'])} of {spec['release']} reads d_in={facts['d_in']}, "
                         f"but the preset's model.d_model is {p['d_in']}")
    sae = formats.load_saelens(res["saelens_dir"])
    if p["model_processing"]:  # a sae-lens dictionary names the TransformerLens processing it was trained on
        kwargs = getattr(sae.cfg.metadata, "model_from_pretrained_kwargs", None)
        trained_on = hf.processing_for_saelens_kwargs(kwargs)
        if trained_on != p["model_processing"]:
            raise ValueError(f"presets.{node['labels']['preset']}.model.processing is {p['model_processing']!r}, but "
                             f"{spec['release']} was trained on model_from_pretrained_kwargs={kwargs} (processing "
                             f"{trained_on!r})")
    gates = quality.evaluate_gates(sae, x, None, p["gates"])
    art.record(fidelity=res["fidelity"], describe=facts, gates=gates,
               formats={"saelens": res["saelens_dir"].relative_to(art.dir).as_posix(), "native": None})
    print("fidelity:", res["fidelity"], "gates:", gates)
    if not gates["passed"] and p["gates"]["fail"]:  # inside the block: a failed gate leaves no artefact
        raise RuntimeError(f"quality gates failed (gates.fail is true): {gates}")
