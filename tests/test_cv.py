"""App. A.3's cross-validation (dart.cv, Table 7): which items each fold trains on and is evaluated on, the errors
for folds that do not match the splits, and Table 7's numbers on hand-made predictions whose metrics are known.
Notebook 06 runs it end to end under `ci` (tests/test_pipeline.py)."""
import pandas as pd
import pytest

from dart_utils.core.paper import reported
from dart_utils.dart import cv
from dart_utils.dart.evaluation import to_predictions


def _row(i, split, gold="YES"):
    return {"id": f"{split}{i}", "benchmark": "D1", "category": "descriptive",
            "condition": "DIFF" if gold == "YES" else "EQUAL", "gold": gold, "question": f"Q{i}?"}


TRAIN = [_row(i, "tr", "YES" if i % 2 else "NO") for i in range(6)]
TEST = [_row(i, "te", "YES" if i % 2 else "NO") for i in range(4)]
FOLDS = [{"id": r["id"], "fold": (i // 2) % 2} for i, r in enumerate(TRAIN + TEST)]     # both labels per fold


def _target(r):
    return {**r, "target": f"Because.\nConclusion: {r['gold']}"}


def test_fold_of_rejects_a_duplicate_and_a_gap():
    assert cv.fold_of(FOLDS)["tr2"] == 1
    with pytest.raises(ValueError, match="'tr0' is assigned twice"):
        cv.fold_of(FOLDS + [{"id": "tr0", "fold": 1}])
    with pytest.raises(ValueError, match=r"folds \[0, 2\] are not 0..1"):
        cv.fold_of([{"id": "a", "fold": 0}, {"id": "b", "fold": 2}])


def test_pool_rows_and_the_error_for_folds_of_other_splits():
    fold = cv.fold_of(FOLDS)
    rows = cv.pool_rows(fold, {"train": TRAIN, "test": TEST, "val": [_row(0, "va")]})
    assert [r["id"] for r in rows] == [r["id"] for r in TRAIN + TEST]          # val is not in the pool
    with pytest.raises(ValueError, match="4 items that no split read here holds.*splits.cv_pool"):
        cv.pool_rows(fold, {"train": TRAIN})
    assert [r["id"] for r in cv.needs_teacher(rows, {r["id"] for r in TRAIN})] == [r["id"] for r in TEST]


def test_each_fold_trains_on_the_other_folds_and_is_evaluated_on_its_own():
    fold = cv.fold_of(FOLDS)
    rows = TRAIN + TEST
    accepted = [_target(r) for r in rows if r["id"] != "tr2"] + [_target(_row(9, "outside"))]   # one never accepted
    seen = set()
    for f in (0, 1):
        train_ids = {t["id"] for t in cv.training_items(accepted, fold, f, balance_labels=False, seed=0)}
        held = {r["id"] for r in cv.eval_rows(rows, fold, f)}
        assert not train_ids & held and "outside9" not in train_ids and "tr2" not in train_ids
        assert train_ids == {r["id"] for r in rows if fold[r["id"]] != f} - {"tr2"}
        seen |= held
    assert seen == {r["id"] for r in rows}                                   # every pool item evaluated exactly once
    # balanced like Stage I: as many YES as NO targets
    bal = cv.training_items(accepted, fold, 0, balance_labels=True, seed=0)
    assert sum(t["gold"] == "YES" for t in bal) == sum(t["gold"] == "NO" for t in bal) > 0


def test_table7_mean_and_sd_over_folds_beside_the_paper():
    rows = TRAIN[:4]
    right = to_predictions(rows, [f"R.\nConclusion: {r['gold']}" for r in rows], [5] * 4, "m")
    half = to_predictions(rows, ["R.\nConclusion: YES"] * 2 + ["no conclusion"] * 2, [5] * 4, "m")
    f0, f1 = cv.fold_row(0, 10, right), cv.fold_row(1, 12, half)
    assert f0["acc_overall"] == 1.0 and f1["acc_overall"] == 0.25 and f1["parse_rate"] == 0.5
    t = cv.table7([f0, f1], reported("table7"), {"n": 4, "train items": 8, **{k: f0[k] for k in cv.METRICS}})
    assert list(t["fold"][:2]) == ["1", "2"] and t["accuracy"][0] == 100.0 and t["accuracy"][1] == 25.0
    summary = t.iloc[2]
    assert summary["fold"] == "mean ± sd (2 folds)" and summary["train items"] == 22
    assert summary["accuracy"] == f"62.5 ± {pd.Series([100.0, 25.0]).std():.1f}"      # sample sd, 53.0
    assert t.iloc[3]["fold"].startswith("main split") and t.iloc[-1]["accuracy"] == "67.9 ± 1.2"
    assert t.iloc[-1]["held-out items"] == 6424


def test_a_fold_with_nothing_to_train_on_or_nothing_held_out_is_an_error():
    fold = cv.fold_of(FOLDS)
    only_fold_0 = [_target(r) for r in TRAIN + TEST if fold[r["id"]] == 0]
    with pytest.raises(ValueError, match="CV fold 1: no item of the other folds has an accepted teacher target"):
        cv.training_items(only_fold_0, fold, 0, balance_labels=False, seed=0)
    with pytest.raises(ValueError, match="CV fold 3 holds no item"):
        cv.eval_rows(TRAIN + TEST, fold, 2)
