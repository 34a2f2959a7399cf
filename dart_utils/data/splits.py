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

import datasets
import pandas as pd

from ..core.paper import reported
from ..core.params import SplitParams
from .suite import FEATURES

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
    total = Counter({f: 0 for f in range(k)})        # across strata: a stratum smaller than k must not always
    for stratum in sorted(by_stratum):               # fill fold 0 first (with 1 item per stratum, fold 1.. were empty)
        groups = by_stratum[stratum]
        keys = sorted(groups)
        random.Random(f"{seed}:cv:{stratum[0]}:{stratum[1]}").shuffle(keys)
        load = Counter({f: 0 for f in range(k)})
        for key in sorted(keys, key=lambda g: -len(groups[g])):  # stable sort keeps the shuffle within a size
            fold = min(range(k), key=lambda f: (load[f], total[f], f))
            load[fold] += len(groups[key])
            total[fold] += len(groups[key])
            assignment += [{"id": i, "fold": fold} for i in groups[key]]
    return sorted(assignment, key=lambda a: a["id"])


def split_summary(dd: datasets.DatasetDict) -> list[dict]:
    """Counts per benchmark x condition x split (the raw material of Table 6)."""
    counts = Counter((r["benchmark"], r["category"], r["condition"], split) for split in dd for r in
                     dd[split].select_columns(["benchmark", "category", "condition"]))
    return [{"benchmark": b, "category": cat, "condition": c, "split": s, "n": n}
            for (b, cat, c, s), n in sorted(counts.items())]


def as_dataset(rows) -> datasets.Dataset:
    """One split's records (as stage 00 wrote them) as a `datasets.Dataset` with the split schema."""
    return datasets.Dataset.from_list(list(rows), features=split_features())


def split_features() -> datasets.Features:
    features = FEATURES.copy()
    features["split"] = datasets.Value("string")
    return features


def _fmt(v) -> str:
    return "—" if v is None else str(v)


def table6_splits(summary: list[dict]) -> pd.DataFrame:
    """Table 6: split sizes by benchmark with DIFF/EQUAL counts, ours beside the paper's reported sizes."""
    ref = reported("table6_splits")
    df = pd.DataFrame(summary)
    wide = df.pivot_table(index=["benchmark", "category"], columns=["split", "condition"], values="n",
                          aggfunc="sum", fill_value=0)
    rows = []
    for (bench, cat), r in wide.iterrows():
        row = {"benchmark": bench, "type": cat}
        for split in ("train", "val", "test"):
            diff, equal = int(r.get((split, "DIFF"), 0)), int(r.get((split, "EQUAL"), 0))
            row[split] = diff + equal
            row[f"{split} DIFF/EQUAL"] = f"{diff}/{equal}"
        row["total"] = row["train"] + row["val"] + row["test"]
        row["paper train"] = _fmt((ref["train_per_benchmark"] or {}).get(bench))
        row["paper val"] = _fmt((ref["val_per_benchmark"] or {}).get(bench))
        row["paper test"] = _fmt((ref["test_per_benchmark"] or {}).get(bench))
        row["paper total"] = _fmt(None)
        rows.append(row)
    table = pd.DataFrame(rows)
    total = {"benchmark": "Total", "type": ""}
    for split in ("train", "val", "test"):
        total[split] = int(table[split].sum())
        d = sum(int(x.split("/")[0]) for x in table[f"{split} DIFF/EQUAL"])
        total[f"{split} DIFF/EQUAL"] = f"{d}/{total[split] - d}"
    total["total"] = int(table["total"].sum())
    total.update({"paper train": str(ref["total"]["train"]), "paper val": str(ref["total"]["val"]),
                  "paper test": str(ref["total"]["test"]), "paper total": str(ref["total"]["all"])})
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def examples_table(ds, per_benchmark: int, max_chars: int = 300) -> pd.DataFrame:
    """A few questions per benchmark (DIFF and EQUAL alternating), truncated for display."""
    df = ds.to_pandas()
    picks = []
    for bench, g in df.sort_values("id").groupby("benchmark"):
        by_cond = [g[g.condition == c] for c in ("DIFF", "EQUAL")]
        for i in range(per_benchmark):
            part = by_cond[i % 2]
            if len(part) > i // 2:
                picks.append(part.iloc[i // 2])
    out = pd.DataFrame(picks)[["id", "benchmark", "condition", "gold", "question"]]
    out["question"] = out["question"].str.slice(0, max_chars).str.replace("\n", " ⏎ ")
    return out.reset_index(drop=True)
