"""The sum tree draws slots in proportion to their values and stays exact under updates."""

from __future__ import annotations

import numpy as np
import pytest

from rollstream.services.replay.sumtree import SumTree

# chi-square critical value, 4 degrees of freedom, p = 0.001 (tables)
CHI2_4DF_P001 = 18.467


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


def test_samples_in_proportion_to_values() -> None:
    tree = SumTree(6)  # 8 leaves inside; slots 6, 7 do not exist
    values = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 10.0])
    tree.update(np.arange(6), values)
    draws = tree.sample(200_000, np.random.default_rng(1))
    counts = np.bincount(draws, minlength=8)
    assert counts[4] == 0  # zero value: never drawn
    assert counts[6:].sum() == 0  # padding leaves: never drawn
    nonzero = [0, 1, 2, 3, 5]
    stat = chi_square(counts[nonzero], values[nonzero] / values.sum())
    assert stat < CHI2_4DF_P001


def test_update_changes_the_distribution() -> None:
    tree = SumTree(5)
    tree.update(np.arange(5), [1.0, 1.0, 1.0, 1.0, 1.0])
    tree.update([0, 4], [6.0, 0.0])  # slot 0 now 6/10, slot 4 gone
    assert tree.total == pytest.approx(9.0)
    counts = np.bincount(tree.sample(100_000, np.random.default_rng(2)), minlength=5)
    assert counts[4] == 0
    probs = np.array([6, 1, 1, 1]) / 9
    # 3 degrees of freedom, p = 0.001
    assert chi_square(counts[:4], probs) < 16.266


def test_totals_and_min_stay_exact_after_many_updates() -> None:
    rng = np.random.default_rng(3)
    n = 1000
    tree = SumTree(n)
    leaves = np.zeros(n)
    for _ in range(200):
        slots = rng.integers(0, n, 64)
        vals = rng.random(64) * rng.integers(0, 2, 64)  # about half are zeros
        tree.update(slots, vals)
        # numpy assignment with repeats keeps the last write, as the tree promises
        leaves[slots] = vals
    assert tree.total == pytest.approx(leaves.sum(), rel=1e-12)
    positive = leaves[leaves > 0]
    assert tree.min() == positive.min()
    assert leaves[tree.argmin()] == positive.min()
    np.testing.assert_array_equal(tree.get(np.arange(n)), leaves)


def test_repeated_slot_in_one_update_keeps_the_last_value() -> None:
    tree = SumTree(4)
    tree.update([2, 2, 2], [5.0, 7.0, 3.0])
    assert tree.get(2) == 3.0
    assert tree.total == 3.0


def test_find_maps_mass_to_the_right_slot() -> None:
    tree = SumTree(4)
    tree.update(np.arange(4), [1.0, 2.0, 0.0, 3.0])
    mass = np.array([0.0, 0.999, 1.0, 2.999, 3.0, 5.9999999])
    np.testing.assert_array_equal(tree.find(mass), [0, 0, 1, 1, 3, 3])


def test_empty_tree_cannot_sample_and_has_no_min() -> None:
    tree = SumTree(3)
    with pytest.raises(ValueError):
        tree.sample(1, np.random.default_rng(0))
    with pytest.raises(ValueError):
        tree.argmin()
    assert tree.min() == np.inf


def test_rejects_bad_values() -> None:
    tree = SumTree(3)
    with pytest.raises(ValueError):
        tree.update([0], [-1.0])
    with pytest.raises(IndexError):
        tree.update([3], [1.0])
