"""The one way a tensor becomes a numpy array.

Paper presets run on CUDA, where `tensor.numpy()` raises TypeError (and a tensor that requires grad
raises too). Every conversion in the library and the workflow scripts goes through `to_numpy`, which
detaches and moves to the CPU first; a test fails on any other `.numpy()` call.
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
