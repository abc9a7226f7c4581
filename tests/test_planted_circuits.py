"""A transformer whose locality is known exactly (saeflow.models.planted_circuits): a hand-built lag-4 copy
head and a uniform head, read by a hand-built sae-lens ReLU SAE. J of every latent equals its closed form,
so H(lag) ~ 0 bits, H(uniform) ~ log2 T bits and H(self) ~ 0 bits, through the code paths the presets use:
``locality.entropy_vs_depth``, ``locality.ctxlen_sweep``, ``locality.top_events`` + ``locality.h_pos``,
with the SAE saved and reloaded in sae-lens format (``formats.load_saelens``)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from saeflow.dictionaries import codes, formats
from saeflow.evals import locality
from saeflow.evals.influence import DictSpec, entropy_bits
from saeflow.models import planted_circuits as pc

LAG, T, TOL_BITS = 4, 24, 1e-3


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    model, sae = pc.locality_model(lag=LAG, n_ctx=32)
    d = tmp_path_factory.mktemp("sae")
    sae.save_model(str(d))
    spec = DictSpec(formats.load_saelens(d), pc.HOOK)  # the format path every dictionary takes
    tokens = np.random.default_rng(0).integers(1, model.cfg.d_vocab, size=(6, T))
    tokens[:, 0] = 0  # BOS
    return model, spec, tokens


def test_attention_is_exactly_lag_and_uniform(planted):
    model, _, tokens = planted
    _, cache = model.run_with_cache(torch.as_tensor(tokens[:1]))
    pat = cache["blocks.0.attn.hook_pattern"][0]
    for t in range(LAG, T):
        assert pat[0, t, t - LAG] == 1.0 and pat[0, t].sum() == 1.0
        torch.testing.assert_close(pat[1, t, : t + 1], torch.full((t + 1,), 1.0 / (t + 1)))


def test_entropy_vs_depth_matches_the_closed_form(planted):
    model, spec, tokens = planted
    res = locality.entropy_vs_depth(model, tokens, np.zeros(len(tokens), np.int64), {0: spec}, threshold=0.0,
                                    n_windows=len(tokens), seed=0, progress=False)[0]
    f, J = res["features"], res["arrays"]["feature_influences"]
    assert sorted(set(f["feature_id"])) == [pc.LAG, pc.UNIFORM, pc.SELF] and len(f) == 3 * len(tokens)
    for i, row in enumerate(f.itertuples(index=False)):
        expected = pc.expected_influence(model, row.feature_id, tokens[row.window_idx])
        np.testing.assert_allclose(J[i], expected, rtol=1e-5, atol=1e-6 * expected.max())
        assert row.entropy == pytest.approx(float(entropy_bits(expected)), abs=1e-6)
        peak = pc.expected_peak(row.feature_id, T, LAG)
        if peak is not None:
            assert int(np.argmax(J[i])) == peak and row.entropy < TOL_BITS
        else:
            assert abs(row.entropy - math.log2(T)) < TOL_BITS


def test_ctxlen_sweep_uniform_follows_log2_length_and_lag_stays_local(planted):
    model, spec, tokens = planted
    lengths = [6, 8, 12, 16, 24]
    feats, _ = locality.ctxlen_sweep(model, tokens[0], {0: spec}, 0.0, lengths, bos_id=0)
    for L in lengths:
        h = feats[feats["ctx_len"] == L].set_index("feature_id")["entropy"]
        assert abs(h[pc.UNIFORM] - math.log2(L)) < TOL_BITS, (L, h[pc.UNIFORM])
        assert h[pc.LAG] < TOL_BITS and h[pc.SELF] < TOL_BITS


def test_h_pos_separates_local_from_broad(planted):
    """H_pos events from top_events over the codes; every lag / self event has H_pos ~ 0 and every uniform
    event ~ log2 N at each context length N: the separation the tiny-synth echo/topic comparison looks for."""
    model, spec, tokens = planted
    with torch.no_grad():
        _, acts = next(locality.site_batches(model, tokens, [pc.HOOK], skip_bos=True))
        f = codes.encode(spec.module, acts[pc.HOOK].reshape(-1, acts[pc.HOOK].shape[-1]))
    ctx_lens = [8, 16]
    events = locality.top_events([f], T - 1, k=3, min_pos=max(ctx_lens) - 1)
    assert set(events["feature_id"]) == {pc.LAG, pc.UNIFORM, pc.SELF}
    out = locality.h_pos(model, tokens, events, spec, 0, ctx_lens, bos_id=0, threshold=0.0, progress=False)
    for N, (rows, _) in out.items():
        assert (rows["status"] == "ok").all()
        by = rows.groupby("feature_id")["H_pos"]
        assert by.max()[pc.LAG] < TOL_BITS and by.max()[pc.SELF] < TOL_BITS
        assert (by.min()[pc.UNIFORM] - math.log2(N)) > -TOL_BITS and by.max()[pc.UNIFORM] <= math.log2(N) + 1e-9


def test_lag_must_fit_the_context():
    with pytest.raises(ValueError, match="lag must be in 1..31"):
        pc.locality_model(lag=32, n_ctx=32)
