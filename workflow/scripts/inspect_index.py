"""Rule inspect_index: index.html of one (preset, dataset): every feature page of the run (its inspect nodes, roles
`inspect__<dictionary>__layer<L>`), by dictionary and layer. Published as inspect_index/index.html, it links to
../inspect/<dictionary>_layer<L>/features.html, where the published run puts the pages
(saeflow.report.publish.destination)."""
from saeflow.report import feature_pages
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
lab = node["labels"]
rows = []
for role in sorted(inputs):
    s = store.read_json(inputs[role] / "summary.json")
    rows.append({**s, "href": f"../inspect/{s['dictionary']}_layer{s['layer']}/features.html"})
rows.sort(key=lambda r: (r["dictionary"], r["layer"]))
methods = sorted({r["method"] for r in rows if r.get("method")})
subtitle = [f"{len(rows)} feature pages: every dictionary and layer of this run",
            "auto-interp method: " + ", ".join(methods) if methods else "no auto-interp in this run"]
with store.write_artefact(out, node) as art:
    art.path("index.html").write_text(
        feature_pages.index_page(f"Feature pages: {lab['preset']} / {lab['dataset']}", subtitle, rows), encoding="utf-8")
    art.record(n_pages=len(rows))
print(f"index of {len(rows)} pages")
