"""The tie-tolerant set comparisons of tests/ties.py accept boundary ties and nothing else."""
import numpy as np
import pytest
from ties import assert_same_active_codes, matched_latents


def test_identical_sets_match_in_order():
    ia, ib = matched_latents([3, 5, 9], [1.0, 2.0, 3.0], [9, 3, 5], [3.0, 1.0, 2.0])
    assert ia.tolist() == [0, 1, 2] and ib.tolist() == [1, 2, 0]


def test_a_topk_boundary_swap_is_a_tie():
    # latent 7 (native) and 8 (other) both sit at the weakest activation of their set
    ia, ib = matched_latents([1, 2, 7], [5.0, 4.0, 3.0], [1, 2, 8], [5.0, 4.0, 3.0000002])
    assert ia.tolist() == [0, 1] and ib.tolist() == [0, 1]


def test_a_threshold_tie_is_a_tie():
    matched_latents([1, 2], [5.0, 0.2], [1], [5.0], threshold=0.2)


@pytest.mark.parametrize("b", [([1, 2, 8], [5.0, 4.0, 2.0]),        # the swapped latent is far below the boundary
                               ([1, 9], [5.0, 4.0])])                 # a strong latent missing
def test_real_differences_fail(b):
    with pytest.raises(AssertionError):
        matched_latents([1, 2, 7], [5.0, 4.0, 3.0], *b)


def test_dense_codes():
    torch = pytest.importorskip("torch")
    fa = torch.tensor([[5.0, 4.0, 3.0, 0.0], [1.0, 0.0, 0.0, 2.0]])
    fb = torch.tensor([[5.0, 4.0, 0.0, 3.0000001], [1.0, 0.0, 0.0, 2.0]])
    assert_same_active_codes(fa, fb)
    with pytest.raises(AssertionError):
        assert_same_active_codes(fa, fb * np.float32(1.01))
