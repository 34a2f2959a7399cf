"""core.sampling: the one proportional allocator and the one seeded stratified sampler (external suites, annotation
sheets). The old external sampler's draws on the real suites are pinned in test_external.py."""
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dart_utils.core.sampling import allocate, stratified_sample


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text("abcdef", min_size=1, max_size=3), st.integers(1, 60), min_size=1, max_size=8),
       st.data())
def test_allocate_properties(sizes, data):
    total = sum(sizes.values())
    n = data.draw(st.integers(0, total + 5))
    alloc = allocate(sizes, n)
    assert sum(alloc.values()) == min(n, total)
    assert all(0 <= alloc[k] <= sizes[k] for k in sizes)
    if len(sizes) <= n:
        assert all(a >= 1 for a in alloc.values())
    if n < total and all(n * s / total >= 1 for s in sizes.values()):
        assert all(abs(alloc[k] - n * sizes[k] / total) < 1 for k in sizes)
    assert alloc == allocate(dict(reversed(list(sizes.items()))), n)   # independent of key order


def test_allocate_by_hand():
    assert allocate({"a": 50, "b": 30, "c": 20}, 10) == {"a": 5, "b": 3, "c": 2}
    assert allocate({"big": 97, "tiny1": 2, "tiny2": 1}, 10) == {"big": 8, "tiny1": 1, "tiny2": 1}
    assert allocate({"a": 1, "b": 1}, 1) == {"a": 1, "b": 0}             # ties by key
    assert allocate({"a": 3, "b": 2}, 9) == {"a": 3, "b": 2}


def _items(sizes):
    ids = [f"{k}-{i:03d}" for k, n in sizes.items() for i in range(n)]
    return ids, [i.split("-")[0] for i in ids]


def test_stratified_sample_is_proportional_seeded_and_order_free():
    ids, strata = _items({"a": 50, "b": 30, "c": 20})
    one = stratified_sample(ids, strata, 10, seed=1)
    assert one == sorted(one) and len(set(one)) == 10
    assert Counter(strata[i] for i in one) == {"a": 5, "b": 3, "c": 2}
    assert one == stratified_sample(ids, strata, 10, seed=1)
    assert one != stratified_sample(ids, strata, 10, seed=2)
    perm = list(range(len(ids)))
    random.Random(0).shuffle(perm)
    shuffled = stratified_sample([ids[p] for p in perm], [strata[p] for p in perm], 10, seed=1)
    assert sorted(ids[perm[i]] for i in shuffled) == sorted(ids[i] for i in one)
    # each stratum: members sorted by id, shuffled by Random(f"{seed}:{stratum}"), the first ones kept
    a = sorted(i for i in ids if i.startswith("a-"))
    random.Random("1:a").shuffle(a)
    assert {ids[i] for i in one if strata[i] == "a"} == set(a[:5])


def test_stratified_sample_edges():
    ids, strata = _items({"a": 3, "b": 2})
    assert stratified_sample(ids, strata, 5, seed=0) == list(range(5))
    assert stratified_sample(ids, strata, 99, seed=0) == list(range(5))
    assert stratified_sample(ids, strata, 0, seed=0) == []
    assert stratified_sample([], [], 3, seed=0) == []
    with pytest.raises(ValueError, match=">= 0"):
        stratified_sample(ids, strata, -1, seed=0)
    with pytest.raises(ValueError, match="strata"):
        stratified_sample(ids, strata[:-1], 2, seed=0)
    # a larger n extends a smaller one (here: within each stratum)
    ids, strata = _items({"a": 40, "b": 40})
    assert set(stratified_sample(ids, strata, 10, seed=3)) <= set(stratified_sample(ids, strata, 20, seed=3))
