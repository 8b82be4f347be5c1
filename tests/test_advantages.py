"""Group-relative advantages and the A-HPO alpha."""

import math

import pytest
import torch

import mhpo

F64 = torch.float64


def test_group_scale_uses_bessel_corrected_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 4.0, 6.0, 8.0], dtype=F64)
    adv = mhpo.group_advantages(rewards, group_size=4)
    # Group 1: mean 0.25, deviations (0.75, −0.25, −0.25, −0.25), sample var = 0.75/3 = 0.25, std 0.5
    # Group 2: mean 5, deviations (−3, −1, 1, 3), sample var = 20/3, std = 2.581989
    s2 = math.sqrt(20 / 3)
    expected = [0.75 / (0.5 + 1e-6), -0.25 / (0.5 + 1e-6), -0.25 / (0.5 + 1e-6), -0.25 / (0.5 + 1e-6),
                -3 / (s2 + 1e-6), -1 / (s2 + 1e-6), 1 / (s2 + 1e-6), 3 / (s2 + 1e-6)]  # fmt: skip
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=F64), rtol=1e-14, atol=0)


def test_batch_and_none_scales():
    rewards = torch.tensor([1.0, 0.0, 3.0, 3.0], dtype=F64)
    # batch std: mean 1.75, deviations (−0.75, −1.75, 1.25, 1.25): Σ² = 0.5625+3.0625+1.5625·2 = 6.75
    # sample var = 6.75/3 = 2.25, std = 1.5
    torch.testing.assert_close(
        mhpo.group_advantages(rewards, 2, scale="batch"),
        torch.tensor([0.5 / 1.500001, -0.5 / 1.500001, 0.0, 0.0], dtype=F64), rtol=1e-14, atol=0,
    )  # fmt: skip
    torch.testing.assert_close(
        mhpo.group_advantages(rewards, 2, scale="none"), torch.tensor([0.5, -0.5, 0.0, 0.0], dtype=F64), rtol=0, atol=0
    )


def test_zero_variance_groups_and_singletons_give_exact_zero():
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7])
    assert torch.all(mhpo.group_advantages(rewards, 3) == 0)
    assert torch.all(mhpo.group_advantages(torch.tensor([1.0, 0.0, 1.0]), 1) == 0)
    assert mhpo.group_advantages(torch.tensor([1, 0, 1, 1]), 2).dtype == torch.float32  # int rewards


def test_group_advantage_errors():
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        mhpo.group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="group_size must be an integer >= 1"):
        mhpo.group_advantages(torch.zeros(6), 0)
    with pytest.raises(ValueError, match="Unknown advantage scale"):
        mhpo.group_advantages(torch.zeros(6), 3, scale="std")
    with pytest.raises(ValueError, match="rewards contain NaN or inf"):
        mhpo.group_advantages(torch.tensor([1.0, float("nan")]), 2)
    with pytest.raises(ValueError, match="1-D tensor"):
        mhpo.group_advantages(torch.zeros(2, 3), 3)


@pytest.mark.parametrize(
    "advantages, alpha_min, expected",
    [
        ([1.0, -1.0, -1.0, -1.0], 0.1, 1 / 3),  # n⁺/n⁻ = 1/3
        ([1.0, 1.0, 1.0, -1.0], 0.1, 1.0),  # 3 → clipped to 1
        ([1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0], 0.1, 0.1),  # 1/11 → 0.1
        ([0.0, 0.0, 1.0], 0.1, 1.0),  # n⁻ = 0
        ([0.0, -2.0, 0.0, 0.5], 0.0, 1.0),  # zeros count in neither: 1/1
        ([-1.0, -1.0], 0.0, 0.0),  # no positives, alpha_min 0
    ],
)
def test_adaptive_alpha(advantages, alpha_min, expected):
    alpha = mhpo.adaptive_alpha(torch.tensor(advantages, dtype=F64), alpha_min=alpha_min)
    assert alpha.item() == pytest.approx(expected, rel=1e-15, abs=0)


def test_adaptive_alpha_from_token_advantages_uses_completion_means():
    adv = torch.tensor([[1.0, 1.0, 9.0], [-1.0, -1.0, 0.0], [-2.0, 0.0, 0.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=F64)
    assert mhpo.adaptive_alpha(adv, mask=mask).item() == pytest.approx(0.5)  # n⁺ = 1, n⁻ = 2
    # (B,) advantages with a mask: completions without counted tokens count in neither
    flat = torch.tensor([1.0, -1.0, -1.0], dtype=F64)
    assert mhpo.adaptive_alpha(flat, mask=torch.tensor([[1, 1], [1, 0], [0, 0]])).item() == pytest.approx(1.0)
    assert mhpo.adaptive_alpha(flat).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="alpha_min must be"):
        mhpo.adaptive_alpha(adv, alpha_min=2.0)
