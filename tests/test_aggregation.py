"""Aggregation modes: hand-computed values, global normalisers and the empty case."""

import pytest
import torch

import mhpo

F64 = torch.float64
# Two completions of lengths 2 and 1 (T = 3), per-token losses 1, 3 | 5.
LOSS = torch.tensor([[1.0, 3.0, 7.0], [5.0, 11.0, 13.0]], dtype=F64)
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=F64)


@pytest.mark.parametrize(
    "mode, kwargs, expected",
    [
        ("token_sum", {}, 9.0),  # 1 + 3 + 5
        ("token_mean", {}, 3.0),  # 9 / 3
        ("token_mean", {"num_tokens": 6}, 1.5),  # 9 / 6
        ("seq_mean_token_mean", {}, 3.5),  # ((1+3)/2 + 5/1) / 2
        ("seq_mean_token_mean", {"num_seqs": 4}, 1.75),  # (2 + 5) / 4
        ("seq_mean_token_sum", {}, 4.5),  # (4 + 5) / 2
        ("seq_mean_token_sum_norm", {}, 1.5),  # 9 / 2 / T, T = 3
        ("seq_mean_token_sum_norm", {"max_length": 10}, 0.45),  # 9 / 2 / 10
        ("mean_length", {}, 3.0),  # 9 / (2 · 1.5), = token_mean
        ("mean_length", {"num_seqs": 3, "mean_length": 2.0}, 1.5),  # 9 / (3 · 2)
    ],
)
def test_aggregation_values(mode, kwargs, expected):
    assert mhpo.aggregate(LOSS, MASK, mode, **kwargs).item() == pytest.approx(expected, rel=1e-15)


def test_empty_completion_is_not_counted():
    mask = torch.cat([MASK, torch.zeros(1, 3, dtype=F64)])
    loss = torch.cat([LOSS, torch.full((1, 3), 100.0, dtype=F64)])
    for mode in mhpo.AGGREGATIONS:
        assert mhpo.aggregate(loss, mask, mode).item() == pytest.approx(
            mhpo.aggregate(LOSS, MASK, mode).item(), rel=1e-15
        )


@pytest.mark.parametrize("mode", mhpo.AGGREGATIONS)
def test_nothing_counted_gives_zero(mode):
    assert mhpo.aggregate(LOSS, torch.zeros_like(MASK), mode).item() == 0.0


def test_aggregation_errors():
    with pytest.raises(ValueError, match="Unknown aggregation 'mean'"):
        mhpo.aggregate(LOSS, MASK, "mean")
    with pytest.raises(ValueError, match="same \\(B, T\\) shape"):
        mhpo.aggregate(LOSS, MASK[:, :2], "token_mean")
    with pytest.raises(ValueError, match="mean_length must be a finite number > 0"):
        mhpo.aggregate(LOSS, MASK, "mean_length", mean_length=float("nan"))


def test_aggregate_gradcheck():
    loss = LOSS.clone().requires_grad_(True)
    for mode in mhpo.AGGREGATIONS:
        assert torch.autograd.gradcheck(lambda x, m=mode: mhpo.aggregate(x, MASK, m), (loss,))
