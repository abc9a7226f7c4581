"""Rule publish: the layout, run_config.json and bench.json of one (preset, dataset) run of the published
tree (saeflow.report.publish); the `publish_run` export then materialises data/<preset>/<dataset>/<timestamp>/."""
import socket

from saeflow.report import publish
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
layout = publish.build_layout(inputs)
with store.write_artefact(out, node) as art:
    store.write_json_atomic(art.path("layout.json"), layout)
    store.write_json_atomic(art.path("bench.json"), publish.bench(inputs))
    store.write_json_atomic(art.path("run_config.json"), {
        **p, "keys": {role: node["upstream"][role] for role in sorted(node["upstream"])},
        "git_commit": store.git_commit(), "host": socket.gethostname()})
    art.record(timestamp=publish.new_timestamp(), n_files=len(layout))
print(f"{len(layout)} files laid out for {p['preset']}/{p['dataset']}")
