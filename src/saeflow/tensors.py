"""Values on their way to numpy and to disk: the one way a tensor becomes a numpy array, and the finiteness
check every result passes before it is stored.

Paper presets run on CUDA, where `tensor.numpy()` raises TypeError (and a tensor that requires grad
raises too). Every conversion in the library and the workflow scripts goes through `to_numpy`, which
detaches and moves to the CPU first; a test fails on any other `.numpy()` call. `require_finite` is how
an eval refuses to store a NaN headline (a NaN is never a result).
"""

from __future__ import annotations


def to_numpy(t, dtype=None):
    """`t` (a torch tensor on any device, or anything numpy accepts) as a numpy array on the host.

    dtype: a torch dtype to cast to before the copy (e.g. torch.float32 for bfloat16, which numpy lacks),
    or a numpy dtype for the result.
    """
    import numpy as np

    if hasattr(t, "detach"):
        import torch

        t = t.detach()
        if isinstance(dtype, torch.dtype):
            t, dtype = t.to(dtype), None
        elif t.dtype == torch.bfloat16:  # numpy has no bfloat16
            t = t.float()
        out = t.cpu().numpy()
    else:
        out = np.asarray(t)
    return out if dtype is None else out.astype(dtype, copy=False)


def require_finite(values: dict, what: str) -> None:
    """Raise FloatingPointError naming every entry of `values` (name -> number, or array of numbers) that
    is NaN or infinite. Evals call it on their headline metrics before writing an artefact."""
    import numpy as np

    bad = []
    for name, v in values.items():
        arr = np.asarray(v, dtype=float)
        if arr.size and not np.isfinite(arr).all():
            bad.append(f"{name} ({int((~np.isfinite(arr)).sum())} of {arr.size} non-finite)" if arr.ndim
                       else f"{name} = {float(arr)}")
    if bad:
        raise FloatingPointError(f"{what}: non-finite {', '.join(bad)}; a NaN is never stored as a result "
                                 "(check the inputs with `saeflow verify`)")
