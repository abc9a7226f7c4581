"""Trained dictionaries as a sae-lens model repo on the Hugging Face Hub (seed 003's layout), pushed by
`saeflow sync push --dictionaries`.

    README.md                                      model card: `library_name: sae_lens`, one row per dictionary
                                                   (model, layer, hook, kind, d_sae, k, quality gates), the
                                                   training setup and a loading snippet
    <preset>_<dataset>_<dictionary>_L<layer>_<hook>/   cfg.json + sae_weights.safetensors of one dictionary, as
                                                   the train_dict artefact holds them (`SAE.load_from_disk`)

The weights and cfg.json are the store's files, byte for byte (their cfg.json metadata names the model, hooks,
context size and dataset: saeflow.dictionaries.formats.write_metadata). A push lists the repo once and uploads only
files it lacks or has different (sha256 for LFS files, the git blob id otherwise), the card last.
"""

from __future__ import annotations

from pathlib import Path

from saeflow.hub.remotes import hash_file
from saeflow.workflow import store

CARD = "README.md"
SAELENS_FILES = ("cfg.json", "sae_weights.safetensors")


def folder_name(labels: dict, hook: str) -> str:
    """`<preset>_<dataset>_<dictionary>_L<layer>_<hook>`, the hook without its `blocks.<L>.` prefix (seed 003:
    `standard_L0_hook_resid_post`)."""
    site = hook.split(".", 2)[-1].replace(".", "_") if hook.startswith("blocks.") else hook.replace(".", "_")
    return f"{labels['preset']}_{labels['dataset']}_{labels['dictionary']}_L{labels['layer']}_{site}"


def entries(artefacts: list[Path]) -> list[dict]:
    """One entry per train_dict artefact: its folder name, labels, params, gates and sae-lens directory."""
    out = []
    for art in artefacts:
        m = store.read_manifest(art)
        if m["step"] != "train_dict":
            raise ValueError(f"{art} is a {m['step']} artefact; only trained dictionaries (train_dict) are pushed")
        out.append({"folder": folder_name(m["labels"], m["params"]["hook_in"]), "labels": m["labels"],
                    "params": m["params"], "gates": m.get("gates") or {}, "key": m["key"],
                    "saelens": Path(art) / m["formats"]["saelens"]})
    names = [e["folder"] for e in out]
    if len(set(names)) != len(names):
        raise ValueError(f"two dictionaries would share a folder: {sorted(n for n in names if names.count(n) > 1)}")
    return sorted(out, key=lambda e: e["folder"])


def model_card(repo_id: str, items: list[dict], license: str = "cc-by-4.0") -> str:
    """README.md of the model repo (seed 003's card): front matter with `library_name: sae_lens`, the table of
    dictionaries with their quality gates, the training setup and the loading snippet."""
    import yaml

    front = {"license": license, "library_name": "sae_lens",
             "tags": ["interpretability", "sparse-autoencoder", "sae", "mechanistic-interpretability", "saeflow"]}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
             f"# {repo_id.split('/')[-1]}: sparse dictionaries trained with saeflow", "",
             f"{len(items)} dictionaries trained by the saeflow workflow on cached activations; each folder is a sae-lens "
             "directory (`cfg.json`, `sae_weights.safetensors`) whose `cfg.json` metadata names the model, hook, context "
             "size and dataset it was trained on.", "",
             "| folder | model | layer | hook | kind | d_sae | k | FVU (gate) | dead fraction (gate) | gates |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in items:
        p, g, md = e["params"], e["gates"], e["params"].get("metadata") or {}
        lines.append(f"| `{e['folder']}/` | {md.get('model_name', '')} | {e['labels']['layer']} | `{p['hook_in']}`"
                     + (f" -> `{p['hook_out']}`" if p.get("hook_out") else "")
                     + f" | {p['kind']} | {p['d_sae']} | {p.get('k', '')} | {_num(g.get('fvu'))} (<= {_num(g.get('max_fvu'))})"
                     f" | {_num(g.get('dead_frac'))} (<= {_num(g.get('max_dead_frac'))}) | "
                     f"{'pass' if g.get('passed') else 'FAIL'} |")
    first = items[0]["folder"] if items else "<folder>"
    lines += ["", "## Training setup", ""]
    for e in items:
        p, md = e["params"], e["params"].get("metadata") or {}
        lines.append(f"- `{e['folder']}`: {p['kind']}, {p['train_tokens']:,} tokens of {md.get('dataset_path', '')}"
                     + (f"@{md['dataset_revision'][:12]}" if md.get("dataset_revision") else "")
                     + f" in windows of {md.get('context_size', '')} tokens (BOS first, left out), batch {p['batch_size']}, "
                     f"lr {p['lr'] if p.get('lr') is not None else 'sparsify default'}, seed {p['seed']}; store key "
                     f"`{e['key']}`.")
    lines += ["", "Gates: FVU and dead fraction measured on held-out cached activations (saeflow.dictionaries.quality).",
              "", "## Loading", "", "```python", "from huggingface_hub import snapshot_download", "from sae_lens import SAE",
              "", f'repo = "{repo_id}"', f'local = snapshot_download(repo_id=repo, allow_patterns=["{first}/*"])',
              f'sae = SAE.load_from_disk(f"{{local}}/{first}")', "print(sae.cfg.metadata.model_name, "
              "sae.cfg.metadata.hook_name)", "```", "",
              "TopK transcoders (`architecture` `topk_skip_transcoder` / `topk_transcoder`) need their class registered "
              "first: `from saeflow.dictionaries.formats import register_saelens_classes; register_saelens_classes()`.", ""]
    return "\n".join(lines)


def _num(v) -> str:
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def push_dictionaries(artefacts: list[Path], remote, license: str = "cc-by-4.0", dry_run: bool = False,
                      staging: Path | None = None) -> dict:
    """Upload the dictionaries of these train_dict artefacts and the card to ``remote`` (a model repo), only the
    files it lacks or has different, the card last. Returns {"upload": [repo paths], "unchanged": n, "commits": n}."""
    import tempfile

    from saeflow.hub.sync import LocalFile, same_content

    items = entries(artefacts)
    with tempfile.TemporaryDirectory(dir=staging) as tmp:
        card_path = Path(tmp) / CARD
        card_path.write_text(model_card(remote.repo_id if hasattr(remote, "repo_id") else "saeflow-dictionaries",
                                        items, license))
        local = {}
        for e in items:
            for name in SAELENS_FILES:
                src = e["saelens"] / name
                if not src.is_file():
                    raise FileNotFoundError(f"{src} is missing: the artefact {e['key']} is incomplete")
                local[f"{e['folder']}/{name}"] = LocalFile(src, *hash_file(src))
        local[CARD] = LocalFile(card_path, *hash_file(card_path))
        listing = remote.list_files()
        upload = sorted(p for p, lf in local.items() if p not in listing or not same_content(lf, listing[p]))
        upload = [p for p in upload if p != CARD] + ([CARD] if CARD in upload else [])
        report = {"upload": upload, "unchanged": len(local) - len(upload), "commits": 0,
                  "dictionaries": [e["folder"] for e in items]}
        if dry_run or not upload:
            return report
        remote.prepare()
        weights = [p for p in upload if p != CARD]
        if weights:
            remote.upload([(p, local[p].path) for p in weights], f"saeflow: {len(items)} dictionaries")
            report["commits"] += 1
        if CARD in upload:
            remote.upload([(CARD, local[CARD].path)], "saeflow: model card")
            report["commits"] += 1
        return report
