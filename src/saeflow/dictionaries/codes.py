"""One interface over sae-lens and sparsify modules: dense codes, decoding, reconstruction, and the
selection rule a module picks its active latents by (``selection_scores``).
"""

from __future__ import annotations


def is_sparsify(module) -> bool:
    return hasattr(module, "encoder") and hasattr(module, "num_latents")


def encode(dict_module, x):
    """Dense latent codes f [..., d_sae] (zeros off the active set) for a sae-lens or sparsify module."""
    import torch

    if is_sparsify(dict_module):
        top_acts, top_idx, _ = dict_module.encode(x.reshape(-1, x.shape[-1]))
        f = torch.zeros(top_acts.shape[0], dict_module.num_latents, dtype=top_acts.dtype, device=x.device)
        return f.scatter(-1, top_idx, top_acts).reshape(*x.shape[:-1], -1)
    return dict_module.encode(x)


def decode(dict_module, f):
    """f @ W_dec + b_dec. For a skip transcoder this omits the skip term x @ W_skip.T: use ``reconstruct``."""
    if is_sparsify(dict_module):
        return f @ dict_module.W_dec + dict_module.b_dec
    return dict_module.decode(f)


def skip_term(dict_module, x):
    """x @ W_skip.T for a skip transcoder, None for dictionaries without a skip connection."""
    W_skip = getattr(dict_module, "W_skip", None)
    return None if W_skip is None else x @ W_skip.T


def reconstruct(dict_module, x):
    """x_hat for an SAE; for a transcoder the predicted MLP output, skip connection included."""
    out = decode(dict_module, encode(dict_module, x))
    skip = skip_term(dict_module, x)
    return out if skip is None else out + skip


def selection_scores(dict_module, x):
    """(scores s [n, d_sae], boundary b, k) of how a dictionary picks its active latents on x [n, d_in].

    A latent i is active on token t iff s[t, i] > b[t, i] (ReLU: s = pre-activation, b = 0; JumpReLU:
    b = the latent's threshold) or, for TopK (k not None), iff it is among the k largest s[t] and s > 0
    (s = relu(pre-activation), as sparsify and sae-lens select; b[t] = the k-th largest s[t]). The
    pre-activation is the one the module's own ``encode`` computes (sae-lens: captured at its
    ``hook_sae_acts_pre``, times the decoder norms when it rescales before TopK).
    """
    import torch

    if is_sparsify(dict_module):
        xin = x if dict_module.cfg.transcode else x - dict_module.b_dec
        s = torch.relu(torch.nn.functional.linear(xin, dict_module.encoder.weight, dict_module.encoder.bias))
        k = int(dict_module.cfg.k)
    elif hasattr(dict_module, "encoder") and hasattr(dict_module, "bias"):  # dictionary_learning AutoEncoder
        return dict_module.encoder(x - dict_module.bias), torch.zeros((), dtype=x.dtype, device=x.device), None
    else:
        seen = []
        handle = dict_module.hook_sae_acts_pre.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            dict_module.encode(x)
        finally:
            handle.remove()
        s = seen[-1]
        cfg = dict_module.cfg
        k = getattr(cfg, "k", None)
        if k is None:
            threshold = getattr(dict_module, "threshold", None)
            b = torch.zeros((), dtype=s.dtype, device=s.device) if threshold is None else threshold.to(s.dtype)
            return s, b, None
        if getattr(cfg, "rescale_acts_by_decoder_norm", False):
            s = s * dict_module.W_dec.norm(dim=-1)
        s, k = torch.relu(s), int(k)
    return s, s.topk(k, dim=-1).values[:, -1:], k
