"""Set comparisons that hold on any machine: two computations of the same active latent set may differ by
a float tie at the selection boundary (the k-th and (k+1)-th TopK pre-activations a few ulps apart, or an
activation within rounding of a threshold), and which side wins depends on the machine's kernels."""
from __future__ import annotations

import numpy as np

RTOL = 1e-4


def matched_latents(lat_a, act_a, lat_b, act_b, threshold: float | None = None, rtol: float = RTOL):
    """(index into a, index into b) of the latents both sets hold, in a's order.

    Every latent of the symmetric difference must be a tie: its activation lies within rtol * max|act| of
    `threshold`, or it sits at its own set's weakest activation and the other set holds, in its place, a latent
    of (within tolerance) the same activation (a TopK boundary swap). At most 2 differing latents per set are
    accepted, so a real difference still fails."""
    lat_a, lat_b = np.asarray(lat_a), np.asarray(lat_b)
    act_a, act_b = np.asarray(act_a, dtype=float), np.asarray(act_b, dtype=float)
    tol = rtol * max(np.abs(act_a).max(initial=0.0), np.abs(act_b).max(initial=0.0), 1e-12)
    only_a, only_b = ~np.isin(lat_a, lat_b), ~np.isin(lat_b, lat_a)
    for lat, act, only, other in ((lat_a, act_a, only_a, act_b[only_b]), (lat_b, act_b, only_b, act_a[only_a])):
        assert only.sum() <= 2, f"{only.sum()} latents differ beyond a tie: {lat[only].tolist()}"
        for v in act[only]:
            at_threshold = threshold is not None and abs(v - threshold) <= tol
            swapped = abs(v - act.min()) <= tol and bool(np.any(np.abs(other - v) <= tol))
            assert at_threshold or swapped, f"latent with activation {v} is not a tie at a selection boundary"
    ia = np.flatnonzero(np.isin(lat_a, lat_b))
    pos_b = {int(v): i for i, v in enumerate(lat_b)}
    ib = np.array([pos_b[int(v)] for v in lat_a[ia]], dtype=int)
    return ia, ib


def assert_same_active_codes(fa, fb, rtol: float = RTOL):
    """Dense codes [n, d] of two encodings of the same inputs: identical active sets up to boundary ties per
    row, and equal values on the latents both hold."""
    import torch

    fa, fb = torch.as_tensor(fa).float(), torch.as_tensor(fb).float()
    for r in torch.nonzero(((fa > 0) != (fb > 0)).any(-1)).flatten().tolist():
        la, lb = torch.nonzero(fa[r] > 0).flatten(), torch.nonzero(fb[r] > 0).flatten()
        matched_latents(la.numpy(), fa[r, la].numpy(), lb.numpy(), fb[r, lb].numpy(), threshold=0.0, rtol=rtol)
    both = (fa > 0) & (fb > 0)
    torch.testing.assert_close(fa[both], fb[both], rtol=1e-5, atol=1e-5)
