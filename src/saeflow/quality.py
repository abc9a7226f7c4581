"""Quality gates of a trained dictionary, measured on cached activations.

    fvu       = sum ||t - t_hat||^2 / sum ||t - mean(t)||^2     (t = x for SAEs, the MLP output for transcoders)
    dead_frac = fraction of latents with no nonzero activation on the check tokens

Gates come from config (`dictionaries.<name>.gates`): `max_fvu`, `max_dead_frac`, and `fail`, which
makes a failed gate fail the job. The result is recorded in the dictionary's manifest either way.
"""

from __future__ import annotations

CHECK_TOKENS = 8192


def evaluate_gates(sae, x, y, gates: dict) -> dict:
    import torch

    from saeflow import dictionary
    from saeflow.recon import fvu

    with torch.no_grad():
        f = dictionary.encode(sae, x)
        pred = dictionary.decode(sae, f)
        target = y if y is not None else x
        value = fvu(target, pred)
        dead = float(((f != 0).sum(0) == 0).float().mean())
    passed = value <= gates["max_fvu"] and dead <= gates["max_dead_frac"]
    return {"n_tokens": int(x.shape[0]), "fvu": value, "dead_frac": dead, "max_fvu": gates["max_fvu"],
            "max_dead_frac": gates["max_dead_frac"], "passed": bool(passed)}
