"""Advantage estimators against hand-computed values."""

from __future__ import annotations

import math

import pytest

from rollstream.services.filter.advantage import advantages, dr_grpo, grpo, rloo


def test_grpo_divides_by_the_sample_std() -> None:
    # [1, 0, 0, 1]: mean 0.5, sample std sqrt(4 * 0.25 / 3) = sqrt(1/3)
    a = 0.5 / math.sqrt(1 / 3)
    assert grpo([1, 0, 0, 1], eps=0.0) == pytest.approx([a, -a, -a, a])
    # [3, 1, 2]: mean 2, sample std sqrt((1 + 1 + 0) / 2) = 1
    assert grpo([3, 1, 2], eps=0.0) == pytest.approx([1.0, -1.0, 0.0])
    # eps enters the denominator: std 1 + eps 1 halves the advantages
    assert grpo([3, 1, 2], eps=1.0) == pytest.approx([0.5, -0.5, 0.0])


def test_dr_grpo_only_centres() -> None:
    assert dr_grpo([1, 0, 0, 1]) == pytest.approx([0.5, -0.5, -0.5, 0.5])
    assert dr_grpo([3, 1, 2]) == pytest.approx([1.0, -1.0, 0.0])


def test_rloo_subtracts_the_mean_of_the_others() -> None:
    # 1 - mean(0, 0, 1) = 2/3 ; 0 - mean(1, 0, 1) = -2/3
    assert rloo([1, 0, 0, 1]) == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    # 3 - 1.5 ; 1 - 2.5 ; 2 - 2
    assert rloo([3, 1, 2]) == pytest.approx([1.5, -1.5, 0.0])


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_degenerate_groups_get_zero_advantage(estimator) -> None:
    assert advantages([5.0], estimator) == [0.0]
    assert advantages([2.0, 2.0, 2.0], estimator) == pytest.approx([0.0, 0.0, 0.0])
    assert advantages([], estimator) == []


def test_unknown_estimator_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown estimator 'ppo'"):
        advantages([1.0, 0.0], "ppo")  # type: ignore[arg-type]
