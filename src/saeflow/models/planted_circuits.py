"""A transformer whose locality is known exactly: weights set by hand, no training (issue 16, item 5).

One attention-only layer, no LayerNorm, one-hot token and position embeddings in separate subspaces of
the residual stream, and two heads that write to subspaces of their own:

    d_model = V (token one-hot) + n_ctx (position one-hot) + m (head 0 output) + m (head 1 output)

- head 0, the **lag head**: its query at position t is the one-hot of position t - lag and its key at s the
  one-hot of s, scaled so that the score gap (``SCORE_GAP`` after TransformerLens' 1/sqrt(d_head)) makes
  the softmax exactly one-hot in float32: the head attends to t - lag only (for t >= lag), and copies the
  token there through W_V (positive values) into its output subspace;
- head 1, the **uniform head**: zero queries and keys, so it attends equally to positions 0..t;
- queries and keys read only the position subspace, which TransformerLens adds *after* ``hook_embed``, so
  attention patterns do not depend on the token embeddings e (the leaf of the influence J).

A sae-lens ReLU SAE (``StandardSAE``) with hand-set encoder reads one subspace per latent:

    LAG      mean of head 0's output dims        f = g mean_j W_V0[tok(t - lag), j]
    UNIFORM  mean of head 1's output dims        f = g/(t+1) sum_{s<=t} mean_j W_V1[tok(s), j]
    SELF     the token one-hot dims (all ones)   f = 1

(g = ``gain``, W_O's scale). J sums over every dimension of the leaf e, and e reaches the site also
directly (the residual stream's identity path), so a latent with encoder direction w always gets
||w||^2 = 1/m of J at the read position itself (V for SELF, which has nothing else); the value path adds
(g/m)^2 ||W_V0 1_m||^2 at t - lag (LAG) or (g/(m T))^2 ||W_V1 1_m||^2 at every s (UNIFORM), with
W_Vh 1_m the row sums over the m value dims of the token rows, whatever tokens the window holds. ``expected_influence`` gives J in closed
form; with the default gain 100 the identity path is ~1e-5 of J, so H(LAG) = H(SELF) ~ 0 bits and
H(UNIFORM) ~ log2 T bits (the tests assert J to float precision and H within 1e-3 bits).
The decoder rows are the unit encoder directions (the reconstruction is not the point). torch,
transformer_lens and sae_lens are imported inside the functions.
"""

from __future__ import annotations

import math

LAG, UNIFORM, SELF = 0, 1, 2
LATENT_NAMES = {LAG: "lag", UNIFORM: "uniform", SELF: "self"}
SCORE_GAP = 1000.0  # exp(-1000) is 0 in float32 and float64: the lag head's softmax is exactly one-hot
HOOK = "blocks.0.hook_resid_post"


def locality_model(lag: int = 4, n_ctx: int = 32, d_vocab: int = 16, m: int = 4, gain: float = 100.0, seed: int = 0):
    """(HookedTransformer, sae-lens StandardSAE at ``HOOK``) as the module docstring describes, on the CPU in
    float32, eval mode. Token 0 serves as BOS. W_V entries are seeded uniform in [0.5, 1.5] (positive, so
    every latent fires on every window), W_U seeded normal (the logits play no part)."""
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    if not 1 <= lag < n_ctx:
        raise ValueError(f"lag must be in 1..{n_ctx - 1} (n_ctx={n_ctx}); got {lag}")
    V, P = d_vocab, n_ctx
    d_model, d_head = V + P + 2 * m, P
    out0, out1 = V + P, V + P + m
    cfg = HookedTransformerConfig(n_layers=1, d_model=d_model, n_ctx=n_ctx, d_head=d_head, n_heads=2,
                                  d_vocab=V, attn_only=True, normalization_type=None, act_fn="relu",
                                  positional_embedding_type="standard", default_prepend_bos=False)
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    scale = SCORE_GAP * math.sqrt(d_head)
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    sd["embed.W_E"][:, :V] = torch.eye(V)
    sd["pos_embed.W_pos"][:, V:V + P] = torch.eye(P)
    for t in range(lag, P):                       # lag head: query(t) = one-hot(t - lag), key(s) = one-hot(s)
        sd["blocks.0.attn.W_Q"][0, V + t, t - lag] = scale
    sd["blocks.0.attn.W_K"][0, V:V + P, :] = torch.eye(P)
    for h, out in ((0, out0), (1, out1)):         # values: the token's positive code, into the head's subspace
        sd["blocks.0.attn.W_V"][h, :V, :m] = 0.5 + torch.rand(V, m, generator=g)
        sd["blocks.0.attn.W_O"][h, :m, out:out + m] = gain * torch.eye(m)
    sd["unembed.W_U"] = torch.randn(d_model, V, generator=g) / math.sqrt(d_model)
    for k in [k for k in sd if k.endswith(("IGNORE", "mask"))]:
        sd[k] = model.state_dict()[k]             # TL's causal-mask buffers stay as built
    model.load_state_dict(sd)
    model.eval()

    W_enc = torch.zeros(d_model, 3)
    W_enc[out0:out0 + m, LAG] = 1.0 / m
    W_enc[out1:out1 + m, UNIFORM] = 1.0 / m
    W_enc[:V, SELF] = 1.0
    sae = StandardSAE(StandardSAEConfig(d_in=d_model, d_sae=3, dtype="float32", device="cpu",
                                        apply_b_dec_to_input=False, metadata=SAEMetadata(hook_name=HOOK)))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.b_enc.zero_()
        sae.W_dec.copy_((W_enc / W_enc.norm(dim=0)).T)
        sae.b_dec.zero_()
    return model, sae.eval()


def expected_influence(model, latent: int, tokens):
    """Closed-form J [T] (float64) of ``latent`` read at the last position of ``tokens`` [T] on a
    ``locality_model`` (see the module docstring; T - 1 >= lag for LAG). Reads the lag, m and gain back
    from the weights."""
    import numpy as np

    from saeflow.tensors import to_numpy

    W_V, W_O = (to_numpy(w, np.float64) for w in (model.W_V[0], model.W_O[0]))
    V = model.cfg.d_vocab
    m = int((np.abs(W_O[0]) > 0).any(1).sum())
    gain = float(np.abs(W_O[0]).max())
    lag = int(np.flatnonzero(np.abs(to_numpy(model.W_Q[0, 0], np.float64)).sum(1))[0]) - V  # first query row
    tokens = np.asarray(tokens)
    T = len(tokens)
    if latent == LAG and T - 1 < lag:
        raise ValueError(f"tokens: a window of {T} tokens read at its last position has no t - lag (lag={lag})")
    J = np.zeros(T)
    if latent == SELF:
        J[T - 1] = V
        return J
    # d f / d e(s) over the token dims k: (gain / m) sum_j W_V[k, j] (whatever token sits at s), times the
    # attention weight: 1 at s = T - 1 - lag (LAG), 1 / T at every s (UNIFORM)
    if latent == LAG:
        J[T - 1 - lag] = (gain / m) ** 2 * np.square(W_V[0, :V, :m].sum(1)).sum()
    elif latent == UNIFORM:
        J[:] = (gain / (m * T)) ** 2 * np.square(W_V[1, :V, :m].sum(1)).sum()
    else:
        raise ValueError(f"latent must be one of {sorted(LATENT_NAMES)}; got {latent!r}")
    J[T - 1] += 1.0 / m  # the identity path: the site reads e(T - 1) directly
    return J


def expected_peak(latent: int, T: int, lag: int = 4) -> int | None:
    """Position of the window whose token carries J: T - 1 - lag (LAG), T - 1 (SELF), None (UNIFORM)."""
    return {LAG: T - 1 - lag, SELF: T - 1}.get(latent)
