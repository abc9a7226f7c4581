"""Quality gates of a trained dictionary, measured on cached activations.

    fvu       = sum ||t - t_hat||^2 / sum ||t - mean(t)||^2     (t = x for SAEs, the MLP output for transcoders)
    dead_frac = fraction of latents with no nonzero activation on the check tokens

Gates come from config (`dictionaries.<name>.gates`, trained and pretrained alike): `max_fvu`,
`max_dead_frac`, and `fail`, which makes a failed gate fail the job. The result is recorded in the
dictionary's manifest either way. A non-finite gate value, like any non-finite headline metric of an
eval (`saeflow.tensors.require_finite`), always fails the job: NaN is never a result.
"""

from __future__ import annotations

from saeflow.tensors import require_finite

CHECK_TOKENS = 8192


def fvu(target, pred) -> float:
    """sum ||y - y_hat||^2 / sum ||y - mean(y)||^2 over the rows of [N, d] tensors, in float64.

    The same definition as saeflow.evals.recon (which accumulates it in streaming form over batches);
    kept here so that dictionary training does not depend on the recon module's code.
    """
    y, y_hat = target.double(), pred.double()
    return float(((y - y_hat) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def evaluate_gates(sae, x, y, gates: dict) -> dict:
    import torch

    from saeflow.dictionaries import codes

    with torch.no_grad():
        f = codes.encode(sae, x)
        pred = codes.reconstruct(sae, x)
        target = y if y is not None else x
        value = fvu(target, pred)
        dead = float(((f != 0).sum(0) == 0).float().mean())
    require_finite({"fvu": value}, "quality gates of the dictionary")
    passed = value <= gates["max_fvu"] and dead <= gates["max_dead_frac"]
    return {"n_tokens": int(x.shape[0]), "fvu": value, "dead_frac": dead, "max_fvu": gates["max_fvu"],
            "max_dead_frac": gates["max_dead_frac"], "passed": bool(passed)}

