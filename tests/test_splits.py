from collections import Counter

import pytest

from dart_utils.core import params as P
from dart_utils.core.artifacts import read_jsonl, write_jsonl
from dart_utils.data import splits as S


@pytest.fixture(scope="module")
def paper_splits(suite, paper_params):
    return S.make_splits(suite, paper_params.splits, paper_params.data.benchmarks)


def test_paper_sizes(paper_splits):
    assert {s: len(paper_splits[s]) for s in S.SPLITS} == {"train": 4800, "val": 1600, "test": 1624}


def test_stratified_per_benchmark_and_condition(paper_splits):
    for split, expected in [("train", 300), ("val", 100)]:
        c = Counter(zip(paper_splits[split]["benchmark"], paper_splits[split]["condition"]))
        assert len(c) == 16 and set(c.values()) == {expected}
    c = Counter(zip(paper_splits["test"]["benchmark"], paper_splits["test"]["condition"]))
    assert len(c) == 16
    assert all(n == (112 if b == "D1" else 100) for (b, _), n in c.items())
    per_bench = Counter(paper_splits["test"]["benchmark"])
    assert per_bench["D1"] == 224 and per_bench["N4"] == 200  # App. Q.2


def test_no_leakage(paper_splits):
    assert S.check_no_leakage(paper_splits) == {"id": 0, "question": 0, "question_group": 0}
    where = {i: s for s in S.SPLITS for i in paper_splits[s]["id"]}
    for a, b in [("N2-diff-0059", "N2-diff-0490"), ("N1-diff-0155", "N1-diff-0615"), ("D3-diff-0007", "D3-diff-0208")]:
        if a in where or b in where:
            assert where.get(a) == where.get(b)


def test_leakage_check_can_fail(paper_splits):
    from datasets import DatasetDict, concatenate_datasets
    leaky = DatasetDict({"train": paper_splits["train"],
                         "val": concatenate_datasets([paper_splits["val"], paper_splits["train"].select([0])])})
    with pytest.raises(S.SplitError, match="leakage: 1 values of 'id'"):
        S.check_no_leakage(leaky)


def test_deterministic_per_seed(suite, paper_params):
    sp = paper_params.splits
    a = S.make_splits(suite, sp, paper_params.data.benchmarks)
    b = S.make_splits(suite, sp, paper_params.data.benchmarks)
    c = S.make_splits(suite, sp.model_copy(update={"seed": 7}), paper_params.data.benchmarks)
    assert a["test"]["id"] == b["test"]["id"] and a["train"]["id"] == b["train"]["id"]
    assert a["test"]["id"] != c["test"]["id"]


def test_resizing_one_stratum_leaves_the_others(suite, paper_params):
    sp = paper_params.splits
    base = S.make_splits(suite, sp, paper_params.data.benchmarks)
    other = S.make_splits(suite, sp.model_copy(update={"test_per_stratum_by_benchmark": {"D1": 50}}),
                          paper_params.data.benchmarks)
    not_d1 = lambda dd: [i for i in dd["test"]["id"] if not i.startswith("D1")]  # noqa: E731
    assert not_d1(base) == not_d1(other)


def test_impossible_sizes_are_an_error(suite, paper_params):
    sp = paper_params.splits.model_copy(update={"train_per_stratum": 900})
    with pytest.raises(S.SplitError, match="asks for 1112 records but it has 1000"):
        S.make_splits(suite, sp, paper_params.data.benchmarks)


def test_cv_folds(paper_splits):
    folds = S.cv_folds(paper_splits, 5, 42)
    pool = set(paper_splits["train"]["id"]) | set(paper_splits["test"]["id"])
    assert len(folds) == len(pool) == 6424 and {f["id"] for f in folds} == pool
    sizes = Counter(f["fold"] for f in folds)
    assert max(sizes.values()) - min(sizes.values()) <= 16 * 4
    fold_of = {f["id"]: f["fold"] for f in folds}
    group_folds = {}
    for split in ("train", "test"):
        for i, g in zip(paper_splits[split]["id"], paper_splits[split]["question_group"]):
            assert group_folds.setdefault(g, fold_of[i]) == fold_of[i]  # a question group never spans two folds
    assert S.cv_folds(paper_splits, 0, 42) == []


def test_cv_folds_balance_strata_smaller_than_k():
    import datasets
    rows = [{"id": f"{b}-{c}", "benchmark": b, "condition": c, "question_group": f"{b}-{c}"}
            for b in ("D1", "D2", "D3", "D4", "N1", "N2", "N3", "N4") for c in ("DIFF", "EQUAL")]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list([])})
    sizes = Counter(f["fold"] for f in S.cv_folds(dd, 2, 42, pool=("train",)))
    assert sizes == {0: 8, 1: 8}                         # one item per stratum: not all of them in fold 0


def test_split_round_trip_through_jsonl(tmp_path, suite):
    p = P.load("ci")
    dd = S.make_splits(suite, p.splits, p.data.benchmarks)
    write_jsonl(dd["test"], tmp_path / "test.jsonl")
    back = S.as_dataset(read_jsonl(tmp_path / "test.jsonl"))
    assert back.to_list() == dd["test"].to_list() and back.features == dd["test"].features
