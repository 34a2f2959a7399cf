"""k-fold cross-validation of Stage I over the train+test pool (App. A.3, Table 7).

Why: Stage III repairs test prompts, and A.3 answers the worry that the gains are an artifact of the split with
"5-fold cross-validation on the combined train+test pool (6,424 examples) ... mean accuracy 67.9 % (±1.2 %)".
The folds are drawn in notebook 00 (`data.splits.cv_folds`: stratified by benchmark × condition, question groups
kept together, over `splits.cv_pool`); notebook 06 trains and evaluates one model per fold with this module.

What each fold is (``[choice]``: the paper does not say which model a fold trains):
* **Stage I exactly as notebook 01 runs it**: the teacher's accepted E.1 targets of the items in the other folds
  (label-balanced like Stage I when ``distill.balance_labels``), Stage I's prompt, LoRA shape, hyperparameters and
  seed (``lm.training.train_lora``); the fold's M_int is evaluated on the held-out fold like M_int (E.3 prompt,
  Stage I's decoding, unparsed = wrong).
* **No Stage II / III per fold**: a fold's repair would need the fold's own audit and would train on the prompts it
  is evaluated on, which is what the cross-validation is meant to keep apart. So Table 7 checks Stage I's
  generalisation; the paper's 67.9 % is closer to its M_DART (68.8 %) than to anything we can name for certain.
* **Teacher targets**: train items reuse notebook 01's targets; every other pool item gets the same E.1 call
  (``distill.distill_targets``, cached; K.4 makes the same calls for the test items, so with both on they are paid
  once). An item whose target the teacher never got right is left out of training, as in Stage I, but is still
  evaluated when its fold is held out.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

from . import distill
from .evaluation import decision_metrics

METRICS = {"acc_overall": "accuracy", "acc_equal": "EQUAL acc.", "acc_diff": "DIFF acc.", "parse_rate": "parse rate",
           "acc_overall_first_match": "accuracy (first-match rule)"}


def fold_of(folds: list[dict]) -> dict[str, int]:
    """id -> fold from notebook 00's `cv_folds` records; rejects a duplicated id or a gap in the fold numbers."""
    out: dict[str, int] = {}
    for r in folds:
        if r["id"] in out:
            raise ValueError(f"cv_folds: item {r['id']!r} is assigned twice")
        out[r["id"]] = int(r["fold"])
    k = len(set(out.values()))
    if out and set(out.values()) != set(range(k)):
        raise ValueError(f"cv_folds: folds {sorted(set(out.values()))} are not 0..{k - 1}")
    return out


def pool_rows(fold: dict[str, int], splits_rows: dict[str, list[dict]]) -> list[dict]:
    """The pool's rows (every split row whose id has a fold), in the order of `splits_rows`; an id with a fold but no
    row (cv_folds from another run's splits) is an error naming it."""
    rows = [r for split in splits_rows.values() for r in split if r["id"] in fold]
    missing = set(fold) - {r["id"] for r in rows}
    if missing:
        raise ValueError(f"cv_folds names {len(missing)} items that no split read here holds, e.g. "
                         f"{sorted(missing)[:3]}: rerun notebook 00 (splits.cv_pool names the splits)")
    return rows


def needs_teacher(rows: list[dict], asked: set[str]) -> list[dict]:
    """The pool rows the teacher has not been asked yet (`asked`: notebook 01 asked every train item; an item it
    never got right stays without a target rather than being asked again)."""
    return [r for r in rows if r["id"] not in asked]


def training_items(accepted: list[dict], fold: dict[str, int], held_out: int, balance_labels: bool,
                   seed: int) -> list[dict]:
    """Fold `held_out`'s Stage I training set: the accepted targets of the pool's other folds (targets of items
    outside the pool are never used), balanced like Stage I."""
    items = [t for t in accepted if t["id"] in fold and fold[t["id"]] != held_out]
    if not items:
        raise ValueError(f"CV fold {held_out + 1}: no item of the other folds has an accepted teacher target, so "
                         "there is nothing to train on; use larger splits or fewer folds (splits.cv_folds)")
    return distill.balance_labels(items, seed)[0] if balance_labels else items


def eval_rows(rows: list[dict], fold: dict[str, int], held_out: int) -> list[dict]:
    """The held-out fold's rows (every pool item in it, with or without an accepted target)."""
    out = [r for r in rows if fold[r["id"]] == held_out]
    if not out:
        raise ValueError(f"CV fold {held_out + 1} holds no item: use fewer folds (splits.cv_folds) or larger splits")
    return out


def fold_dir(root: Path, f: int) -> Path:
    """Where fold f's Stage I run lives (``root/fold_<f>``; its adapter under ``adapter``)."""
    return Path(root) / f"fold_{f}"


def fold_row(f: int, train_n: int, records: list[dict]) -> dict:
    """One row of Table 7: the fold's sizes and its M_int's metrics (fractions) on the held-out items."""
    m = decision_metrics(pd.DataFrame(records))
    return {"fold": f + 1, "train items": train_n, "held-out items": m["n"], **{k: m[k] for k in METRICS}}


def table7(rows: list[dict], paper: dict, main_split: dict | None = None) -> pd.DataFrame:
    """Table 7: one row per fold (percent), their mean ± sd (sample sd over folds), notebook 01's M_int on the
    main test split when given, and the paper's mean ± sd."""
    df = pd.DataFrame(rows)
    pct = {k: v for k, v in METRICS.items()}
    out = [{"fold": str(r["fold"]), "train items": r["train items"], "held-out items": r["held-out items"],
            **{pct[k]: round(100 * r[k], 1) for k in METRICS}} for r in rows]
    if len(df) >= 2:
        summary = {"fold": f"mean ± sd ({len(df)} folds)", "train items": int(df["train items"].sum()),
                   "held-out items": int(df["held-out items"].sum())}
        for k in METRICS:
            vals = [100 * v for v in df[k] if pd.notna(v)]
            summary[pct[k]] = (f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"
                               if len(vals) >= 2 else "–")
        out.append(summary)
    if main_split is not None:
        out.append({"fold": "main split M_int (notebook 01, test)", "train items": main_split.get("train items"),
                    "held-out items": main_split["n"],
                    **{pct[k]: round(100 * main_split[k], 1) for k in METRICS}})
    out.append({"fold": f"paper ({paper['model']}, {paper['k']}-fold)", "train items": None,
                "held-out items": paper.get("pool"),
                pct["acc_overall"]: f"{paper['acc_mean']:.1f} ± {paper['acc_sd']:.1f}"})
    return pd.DataFrame(out, columns=["fold", "train items", "held-out items", *pct.values()])
