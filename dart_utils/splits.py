"""Train / validation / test splits (paper §3.1, App. A) and optional k-fold CV folds (App. A.3).

Why: the paper reports 4,800 / 1,600 / 1,624 over the 16 strata benchmark x condition; App. Q.2 gives 200 test
items per benchmark except D1 with 224. We reconstruct that as 300 / 100 / 100 per stratum with D1's test at 112
per condition (docs/splits.md). Sizes are exact, each stratum is shuffled by its own seeded RNG (so resizing one
stratum does not reshuffle the others), and questions that are the same up to option order move together, so no
question text (nor a reordered copy of it) appears in two splits.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import datasets

from .data import FEATURES
from .params import SplitParams
from .runs import read_jsonl, write_jsonl

STAGE = "00_data_splits"
SPLITS = ("train", "val", "test")
CONDITIONS = ("DIFF", "EQUAL")


class SplitError(ValueError):
    """The requested split sizes cannot be met exactly, or a leakage check failed."""


def stratum_sizes(sp: SplitParams, benchmarks: list[str]) -> dict[tuple[str, str], dict[str, int]]:
    """Requested train/val/test size for every (benchmark, condition) stratum."""
    unknown = set(sp.test_per_stratum_by_benchmark) - set(benchmarks)
    if unknown:
        raise SplitError(f"splits.test_per_stratum_by_benchmark names unknown benchmarks {sorted(unknown)}")
    return {
        (b, c): {"train": sp.train_per_stratum, "val": sp.val_per_stratum,
                 "test": sp.test_per_stratum_by_benchmark.get(b, sp.test_per_stratum)}
        for b in benchmarks for c in CONDITIONS
    }


def _groups(rows: list[dict], group_same_question: bool) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["id"]):
        groups[r["question_group"] if group_same_question else r["id"]].append(r)
    return groups


def _take_exact(keys: list[str], groups: dict[str, list[dict]], n: int, label: str) -> list[str]:
    """Take whole groups in (shuffled) order until exactly n records; skip a group that would overshoot."""
    chosen, count = [], 0
    for k in keys:
        if count == n:
            break
        size = len(groups[k])
        if count + size <= n:
            chosen.append(k)
            count += size
    if count != n:
        raise SplitError(f"{label}: cannot take exactly {n} records in whole question groups (got {count}); "
                         f"lower the split size or set splits.group_same_question: false")
    return chosen


def make_splits(suite: datasets.Dataset, sp: SplitParams, benchmarks: list[str]) -> datasets.DatasetDict:
    """Stratified, group-aware, exact-size splits; deterministic for a given seed."""
    by_stratum: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in suite:
        by_stratum[(r["benchmark"], r["condition"])].append(r)
    _check_groups_within_strata(by_stratum, sp.group_same_question)
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for (bench, cond), sizes in stratum_sizes(sp, benchmarks).items():
        rows = by_stratum.get((bench, cond), [])
        label = f"stratum {bench}/{cond}"
        if sum(sizes.values()) > len(rows):
            raise SplitError(f"{label}: {sizes} asks for {sum(sizes.values())} records but it has {len(rows)}")
        groups = _groups(rows, sp.group_same_question)
        keys = sorted(groups)
        random.Random(f"{sp.seed}:{bench}:{cond}").shuffle(keys)
        for split in ("test", "val", "train"):  # test first: the scarcest, most important split is filled first
            chosen = _take_exact(keys, groups, sizes[split], f"{label} {split}")
            taken = set(chosen)
            keys = [k for k in keys if k not in taken]
            for k in chosen:
                out[split].extend(dict(r, split=split) for r in groups[k])
    for split in SPLITS:
        out[split].sort(key=lambda r: r["id"])
    features = split_features()
    dd = datasets.DatasetDict({s: datasets.Dataset.from_list(out[s], features=features) for s in SPLITS})
    check_no_leakage(dd)
    return dd


def _check_groups_within_strata(by_stratum: dict, group_same_question: bool) -> None:
    if not group_same_question:
        return
    home: dict[str, tuple] = {}
    for stratum, rows in by_stratum.items():
        for r in rows:
            other = home.setdefault(r["question_group"], stratum)
            if other != stratum:
                raise SplitError(f"question group of {r['id']} spans strata {other} and {stratum}: the same "
                                 f"question has two gold labels; fix the data before splitting")


def check_no_leakage(dd: datasets.DatasetDict) -> dict[str, int]:
    """Raise if an id, a question text or a question group occurs in two splits; return overlap counts (all 0)."""
    report = {}
    for column in ("id", "question", "question_group"):
        owner: dict[str, str] = {}
        clashes = 0
        for split in dd:
            for value in set(dd[split][column]):
                if owner.setdefault(value, split) != split:
                    clashes += 1
        report[column] = clashes
        if clashes:
            raise SplitError(f"leakage: {clashes} values of '{column}' occur in more than one split")
    return report


def cv_folds(dd: datasets.DatasetDict, k: int, seed: int, pool: tuple[str, ...] = ("train", "test")) -> list[dict]:
    """k stratified, group-aware folds over the train+test pool (App. A.3); returns [{id, fold}] sorted by id."""
    if k < 2:
        return []
    by_stratum: dict[tuple, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for split in pool:
        for r in dd[split]:
            by_stratum[(r["benchmark"], r["condition"])][r["question_group"]].append(r["id"])
    assignment = []
    for stratum in sorted(by_stratum):
        groups = by_stratum[stratum]
        keys = sorted(groups)
        random.Random(f"{seed}:cv:{stratum[0]}:{stratum[1]}").shuffle(keys)
        load = Counter({f: 0 for f in range(k)})
        for key in sorted(keys, key=lambda g: -len(groups[g])):  # stable sort keeps the shuffle within a size
            fold = min(range(k), key=lambda f: (load[f], f))
            load[fold] += len(groups[key])
            assignment += [{"id": i, "fold": fold} for i in groups[key]]
    return sorted(assignment, key=lambda a: a["id"])


def split_summary(dd: datasets.DatasetDict) -> list[dict]:
    """Counts per benchmark x condition x split (the raw material of Table 6)."""
    counts = Counter((r["benchmark"], r["category"], r["condition"], split) for split in dd for r in
                     dd[split].select_columns(["benchmark", "category", "condition"]))
    return [{"benchmark": b, "category": cat, "condition": c, "split": s, "n": n}
            for (b, cat, c, s), n in sorted(counts.items())]


def save_splits(dd: datasets.DatasetDict, folds: list[dict], out_dir: Path) -> dict[str, Path]:
    """Write <split>.jsonl (and cv_folds.jsonl when folds exist) into the stage directory."""
    out_dir = Path(out_dir)
    paths = {split: write_jsonl(dd[split], out_dir / f"{split}.jsonl") for split in dd}
    if folds:
        paths["cv_folds"] = write_jsonl(folds, out_dir / "cv_folds.jsonl")
    return paths


def load_splits(stage_dir: Path) -> datasets.DatasetDict:
    """Read the splits that notebook 00 wrote (what every later stage starts from)."""
    stage_dir = Path(stage_dir)
    missing = [s for s in SPLITS if not (stage_dir / f"{s}.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(f"{stage_dir} has no {missing} split files: run stage 00 first (make stage-00)")
    features = split_features()
    return datasets.DatasetDict({s: datasets.Dataset.from_list(read_jsonl(stage_dir / f"{s}.jsonl"), features=features)
                                 for s in SPLITS})


def split_features() -> datasets.Features:
    features = FEATURES.copy()
    features["split"] = datasets.Value("string")
    return features
