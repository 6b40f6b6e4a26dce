import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimum_subnet.algorithms.masks import (
    importance_order,
    mutate_mask,
    overlap_fraction,
    resize_by_importance,
    top_k,
)

pytestmark = pytest.mark.unit


@settings(max_examples=200, deadline=None)
@given(universe=st.integers(2, 200), data=st.data())
def test_mutate_mask_size_and_overlap(universe, data):
    old_size = data.draw(st.integers(1, universe))
    new_size = data.draw(st.integers(1, universe))
    overlap = data.draw(st.floats(0.05, 1.0))
    seed = data.draw(st.integers(0, 10**6))
    rng = random.Random(seed)
    old = tuple(sorted(rng.sample(range(universe), old_size)))
    weights = data.draw(st.one_of(st.none(), st.just([rng.random() for _ in range(universe)])))
    new = mutate_mask(old, universe, new_size, overlap, rng, weights)
    assert len(new) == new_size == len(set(new))
    assert list(new) == sorted(new) and all(0 <= i < universe for i in new)
    assert overlap_fraction(old, new) >= overlap - 1e-9 or len(set(old) & set(new)) >= min(old_size, new_size) * overlap


def test_mutate_mask_is_not_rejection_sampling_for_large_masks():
    # gamma < alpha: the paper's rejection sampling would essentially never succeed here
    rng = random.Random(0)
    old = tuple(range(0, 600))
    new = mutate_mask(old, 11008, 600, 0.8, rng)
    assert overlap_fraction(old, new) >= 0.8 and new != old


def test_importance_weighted_fill_prefers_heavy_members():
    rng = random.Random(1)
    weights = [1.0] * 50 + [1000.0] * 50
    counts = 0
    for _ in range(200):
        new = mutate_mask(tuple(range(10)), 100, 20, 0.5, rng, weights)
        counts += sum(1 for i in new if i >= 50)
    assert counts / (200 * 15) > 0.9  # at least 15 filled per draw, nearly all from the heavy half


def test_top_k_and_resize():
    scores = [0.5, 3.0, 1.0, 3.0, 0.1]
    assert top_k(scores, 2) == (1, 3)
    assert resize_by_importance((0, 1, 3), 2, scores) == (1, 3)
    assert resize_by_importance((1,), 3, scores) == (1, 2, 3)


def _direct_top_k(scores, k):
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return tuple(sorted(order[:k]))


def _direct_resize(mask, new_size, scores):
    """The definition: drop the least important members (ties: higher index first), or add the most
    important others (ties: lower index first)."""
    current = set(mask)
    if new_size < len(current):
        ranked = sorted(current, key=lambda i: (float(scores[i]), -i))
        return tuple(sorted(current - set(ranked[: len(current) - new_size])))
    others = sorted((i for i in range(len(scores)) if i not in current), key=lambda i: (-float(scores[i]), i))
    return tuple(sorted(current | set(others[: new_size - len(current)])))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_precomputed_order_gives_the_same_top_k_and_resize(data):
    """The search's path (one importance order per score vector) equals the direct definition, ties
    included (scores drawn from few values), with the order given and computed on the fly."""
    n = data.draw(st.integers(1, 60))
    scores = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0]), min_size=n, max_size=n))
    order = importance_order(scores)
    k = data.draw(st.integers(0, n))
    assert top_k(scores, k, order) == top_k(scores, k) == _direct_top_k(scores, k)
    mask = tuple(sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1))))
    new_size = data.draw(st.integers(1, n))
    expected = _direct_resize(mask, new_size, scores)
    assert resize_by_importance(mask, new_size, scores, order) == expected
    assert resize_by_importance(mask, new_size, scores) == expected

