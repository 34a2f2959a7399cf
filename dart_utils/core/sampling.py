"""Proportional stratified sampling: ONE allocator and ONE seeded stratified sampler for the whole project.

Why: a sample that stands for a population (the external suites' CPU subsets, the App. L / M.1 annotation sheets)
must keep every stratum in proportion, and must depend only on the seed and the data (not on row order or on how
many other strata were drawn before). Two implementations of the same idea drift apart, so there is one:

* `allocate(sizes, n)`: n split over strata in proportion to their sizes (largest remainder, ties by key); every
  stratum gets at least 1 when n >= the number of strata; all of every stratum when n >= the total.
* `stratified_sample(ids, strata, n, seed)`: the indices of a stratified sample of n items. Each stratum's members
  are sorted by id, shuffled by `random.Random(f"{seed}:{stratum}")` and its first `allocate` share is kept; the
  chosen indices come back in ascending order (the input's order).
"""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Sequence


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split n over strata of the given sizes in proportion (largest remainder, ties by key).

    When n >= the number of strata, every stratum gets at least 1. Each stratum then gets floor or ceil of its exact
    share n*size/total. That is always true when every share is >= 1. A tiny stratum lifted to 1 can push a larger
    one one further below its share. If n >= the total, every stratum gets its full size. Keys must be sortable
    (strings in practice): the result does not depend on the order of `sizes`.
    """
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    keys = sorted(sizes)
    share = {k: n * sizes[k] / total for k in keys}
    least = 1 if n >= len(keys) else 0
    alloc = {k: max(int(share[k]), least) for k in keys}
    while sum(alloc.values()) < n:
        k = max((k for k in keys if alloc[k] < sizes[k]), key=lambda k: share[k] - alloc[k])
        alloc[k] += 1
    while sum(alloc.values()) > n:
        k = min((k for k in keys if alloc[k] > least), key=lambda k: share[k] - alloc[k])
        alloc[k] -= 1
    return alloc


def stratified_sample(ids: Sequence[Hashable], strata: Sequence[str], n: int, seed) -> list[int]:
    """Indices (ascending) of a proportional stratified sample of n of the items (`ids[i]` in stratum
    `strata[i]`; a stratum is a string, it seeds that stratum's shuffle). All indices when n >= len(ids).

    A larger n (almost always) extends a smaller one, and the draw does not depend on the items' order."""
    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    if len(ids) != len(strata):
        raise ValueError(f"{len(ids)} ids for {len(strata)} strata")
    members: dict[str, list[int]] = defaultdict(list)
    for i in sorted(range(len(ids)), key=lambda i: ids[i]):
        members[strata[i]].append(i)
    alloc = allocate({k: len(v) for k, v in members.items()}, n)
    chosen = []
    for k in sorted(members):
        idx = members[k][:]
        random.Random(f"{seed}:{k}").shuffle(idx)
        chosen += idx[:alloc[k]]
    return sorted(chosen)
