"""`saeflow sync push --dictionaries`: the tiny config's trained dictionaries pushed as a sae-lens model repo to the
local Hub server (tests/hub_server.py, driven by the real huggingface_hub client), downloaded back with
`snapshot_download` as the model card's snippet does, and loaded with `SAE.load_from_disk`: same weights as the
store, metadata that names the model, hook and context; the card says `library_name: sae_lens`; a second push
uploads nothing. The README's command runs as written."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hub_server import HubServer
from test_sync import TOKEN, cli_env, saeflow_cli
from test_workflow import CONFIG, copy_workflow

from saeflow.workflow import store

pytestmark = [pytest.mark.workflow,
              pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")]
REPO = "you/saeflow-dictionaries"
README_COMMANDS = ["saeflow sync push --dictionaries --repo you/saeflow-dictionaries"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workflow copy whose default config is the tiny one, with its dictionaries trained."""
    from saeflow.cli import load_plan

    wd = copy_workflow(tmp_path_factory.mktemp("wf_dicts"))
    (wd / "config/config.yaml").write_text((wd / CONFIG).read_text())
    plan = load_plan([], wd)
    targets = [f"{n.path}/manifest.json" for n in plan.nodes.values() if n.step == "train_dict"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "SPARSIFY_DISABLE_TRITON": "1"}
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *targets], cwd=wd, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    print(f"tiny dictionaries trained: {time.time() - t0:.1f} s")
    return wd, [wd / Path(t).parent for t in targets]


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with HubServer(token=TOKEN) as server:
        yield server
    assert server.unhandled == [], server.unhandled


def test_push_as_a_saelens_model_repo_and_load_back(trained, hub, tmp_path):
    from huggingface_hub import snapshot_download
    from readme import run_readme_command
    from sae_lens import SAE
    from safetensors.torch import load_file

    from saeflow.dictionaries.formats import register_saelens_classes

    wd, arts = trained
    env = {**cli_env(hub, tmp_path, HF_TOKEN=TOKEN), "PYTHONPATH": str(wd / "src")}
    res = run_readme_command(README_COMMANDS[0], wd, env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert ("model", REPO) in hub.repos and "3 dictionaries" in res.stdout and TOKEN not in res.stdout + res.stderr
    files = hub.files(REPO, "model")
    card = files["README.md"].decode()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "sae_lens"
    folders = sorted({p.split("/")[0] for p in files if "/" in p})
    assert folders == ["t_synthetic_saelens-topk_L1_hook_resid_post", "t_synthetic_topk_L1_hook_resid_post",
                       "t_synthetic_transcoder_L1_ln2_hook_normalized"]
    for f in folders:
        assert f"| `{f}/` |" in card
    assert "SAE.load_from_disk" in card and "snapshot_download" in card and "pass |" in card
    # the snippet's path: download, then load each folder as sae-lens does
    local = snapshot_download(repo_id=REPO, endpoint=hub.endpoint, token=TOKEN, local_dir=tmp_path / "dl")
    register_saelens_classes()
    by_folder = {}
    for art in arts:
        m = store.read_manifest(art)
        by_folder[f"t_synthetic_{m['labels']['dictionary']}_L1_" +
                  m["params"]["hook_in"].split(".", 2)[-1].replace(".", "_")] = (art, m)
    for f in folders:
        sae = SAE.load_from_disk(f"{local}/{f}")
        art, m = by_folder[f]
        assert sae.cfg.metadata.model_name == "saeflow-embedded/t" and sae.cfg.metadata.hook_name == m["params"]["hook_in"]
        assert sae.cfg.metadata.context_size == 24 and sae.cfg.metadata.prepend_bos is True
        assert sae.cfg.metadata.dataset_path == "saeflow:synthetic"
        stored = load_file(str(art / m["formats"]["saelens"] / "sae_weights.safetensors"))
        for name, t in sae.state_dict().items():
            assert (t == stored[name]).all(), (f, name)
    # nothing changed: nothing to upload
    res = saeflow_cli(["sync", "push", "--dictionaries", "--repo", REPO], env, wd)
    assert res.returncode == 0 and "uploaded 0 files" in res.stdout, res.stdout + res.stderr
