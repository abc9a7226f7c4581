"""Encode fidelity of a conversion: the same active latents on every token, up to float ties at the
selection boundary, and the same reconstruction (``check_encode_fidelity``).
"""

from __future__ import annotations

from saeflow.dictionaries.codes import decode, encode, reconstruct, selection_scores, skip_term

FIDELITY_RTOL = 1e-4


# Selection scores this close to the boundary (relative) are a float tie: see check_encode_fidelity.
TIE_RTOL = 1e-4


def check_encode_fidelity(native, converted, x) -> dict:
    """Compare a dictionary and its sae-lens conversion (or reloaded copy) on activations x [n, d_in].

    Active set A(t) = {i : f_i(t) > 0} per token t (sparsify may return zero-valued TopK slots when
    fewer than k pre-activations are positive, sae-lens picks other zero slots: only nonzeros count).
    jaccard(t) = |A_n & A_c| / |A_n | A_c| (1 when both are empty).

    A token whose sets differ is a *tie*, not a difference, when every latent i of the symmetric
    difference S(t) sits on the selection boundary in both modules (``selection_scores``):
    |s_i(t) - b_i(t)| <= TIE_RTOL * max(|b_i(t)|, rms_j s_j(t)), e.g. the k-th and (k+1)-th TopK
    pre-activations 2e-7 apart, where which one wins depends on the machine's kernels. The
    reconstructions are then compared with the tied latents' contributions removed:
    x_hat'(t) = decode(f(t) with S(t) zeroed) (+ skip term). ``passed`` requires every differing token to
    be a tie and max|x_hat'_n - x_hat'_c| <= FIDELITY_RTOL * max|x_hat_n| (on identical tokens x_hat' = x_hat).
    A real difference (e.g. a dropped ``x - b_dec`` shift) moves many latents far from any boundary and fails.
    """
    import torch

    with torch.no_grad():
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        f_n, f_c = encode(native, x), encode(converted, x)
        r_n = reconstruct(native, x)
        a_n, a_c = f_n > 0, f_c > 0
        inter, union = (a_n & a_c).sum(-1).float(), (a_n | a_c).sum(-1).float()
        jac = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        identical = (a_n == a_c).all(-1)
        sym = a_n != a_c
        tied = torch.zeros_like(identical)
        if not identical.all():
            rows = (~identical).nonzero().flatten()
            on_boundary = torch.ones(len(rows), len(f_n[0]), dtype=torch.bool, device=x.device)
            for module in (native, converted):
                s, b, _ = selection_scores(module, x[rows])
                b = b.expand_as(s)
                scale = torch.maximum(b.abs(), s.pow(2).mean(-1, keepdim=True).sqrt())
                on_boundary &= (s - b).abs() <= TIE_RTOL * scale
            tied[rows] = (on_boundary | ~sym[rows]).all(-1)
        keep = (~sym).to(f_n.dtype)
        skip = skip_term(native, x)
        r_n_kept = decode(native, f_n * keep) + (0 if skip is None else skip)
        skip_c = skip_term(converted, x)
        r_c_kept = decode(converted, f_c * keep) + (0 if skip_c is None else skip_c)
        recon_diff = (r_n_kept - r_c_kept).abs().max().item()
        rel = recon_diff / max(r_n.abs().max().item(), 1e-12)
        res = {"n_tokens": int(x.shape[0]), "jaccard_min": jac.min().item(), "jaccard_mean": jac.mean().item(),
               "identical_active_frac": identical.float().mean().item(), "n_tied_tokens": int(tied.sum().item()),
               "n_differing_tokens": int((~identical & ~tied).sum().item()),
               "max_abs_latent_diff": ((f_n - f_c) * keep).abs().max().item(), "max_abs_recon_diff": recon_diff,
               "rel_recon_diff": rel, "tie_rtol": TIE_RTOL}
    res["passed"] = res["n_differing_tokens"] == 0 and rel <= FIDELITY_RTOL
    return res
