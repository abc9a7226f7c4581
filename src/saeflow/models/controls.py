"""Model controls: a preset's model with its weights re-initialised (the randomized-model control).

A control preset `<preset>-randomized` (config `presets.<preset>.controls: [randomized]`) runs every node of
its preset (cache, dictionaries, evals, figures) on `randomized(model, seed)`, so that each headline can be
read next to the value a model with the same architecture and tokenizer but no training gives (seed 000's
randomized-model gap). Its `randomize_lm` artefact holds the base model's files and `randomized.json`;
`saeflow.models.lm.load_model` re-initialises on load, so a hub model's weights are never copied.
"""

from __future__ import annotations

import copy

RANDOMIZED_FILE = "randomized.json"
# HookedTransformer.__init__'s init_weights, as for a new model of the same config. The plan writes the same
# string into randomize_lm's key (saeflow.workflow.config.RANDOMIZED_INIT, equal by test): importing the
# config module here would put it into the code fingerprint of every step that loads a model.
INIT = "transformer_lens"


def randomized(model, seed: int):
    """A new HookedTransformer of ``model``'s config (cfg.seed = seed) with ``model``'s tokenizer, in eval
    mode on ``model``'s device: every weight matrix as TransformerLens initialises a new model (cfg.init_mode,
    cfg.initializer_range), every bias 0 and every LayerNorm scale 1. Built on the CPU and then moved, so
    the weights do not depend on the device or its RNG."""
    import torch
    from transformer_lens import HookedTransformer

    device = model.cfg.device
    cfg = copy.deepcopy(model.cfg)
    cfg.seed, cfg.device, cfg.init_weights = int(seed), "cpu", True
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):  # init_weights reseeds every device: the caller's RNGs stay its own
        fresh = HookedTransformer(cfg, tokenizer=model.tokenizer, move_to_device=False)
    fresh.cfg.device = device
    return fresh.to(device).eval()
