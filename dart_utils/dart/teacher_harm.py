"""K.4 teacher vs student harm (Table 22): is harm drift inherited from the teacher, or made by fine-tuning?

Why: App. K.4 argues that drift is not copied from the teacher: "teacher-generated rationales exhibit the same harm
patterns on only 2.0 % of prompts, whereas the distilled student reaches 26.8 %". To measure that with our models the
teacher's rationales go through Stage II exactly like M_int's:

1. `teacher_predictions`: the teacher writes a Stage I target for every TEST item (E.1 prompt, gold-conditioned, the
   same client, validation and format-fix rounds as `distill.distill_targets`), read like a student output.
2. Its rationales are scored by the audit's classifier, paired with M0's outputs, screened at tau_delta and judged by
   the same comparative judge (`audit.run_audit(..., candidate="teacher")`): the teacher takes M_int's place as
   Model B.
3. `harm_profile` gives each audit's row; `analysis.baselines.table22` sets the teacher's drift cases beside M_int's
   from Stage II, with Wilson CIs and an exact McNemar test on the items both audits judged.

Choices (``[choice]``; the paper does not say):
* Every teacher reply is audited, the ones that fail E.1's validation too (the last reply, completed like a Stage I
  target when only the conclusion line was added): what the teacher writes is what it would teach, and dropping its
  failures could hide harm. Table 22 counts the accepted ones.
* Table 22's "harm types" (its body is missing from the text) are the judge's severity levels of §2.4, since the
  judge schema of App. D.1 has no type field; novel / amplified follow the audit's definition (audit.py).
"""
from __future__ import annotations

import pandas as pd

from .audit import DRIFT_SEVERITIES
from .distill import DistillResult, distill_targets
from .evaluation import to_predictions

MODEL = "teacher"


def teacher_predictions(rows, client, dp) -> tuple[list[dict], DistillResult]:
    """The teacher's E.1 reply for every row as prediction records (`evaluation.to_predictions`, model "teacher",
    `accepted` = passed Stage I's validation), in row order, and the distillation result (calls are cached)."""
    rows = list(rows)
    result = distill_targets(rows, client, dp)
    texts = {r["id"]: r["target"] for r in result.accepted} | {r["id"]: r["raw_text"] or "" for r in result.rejected}
    missing = [r["id"] for r in rows if r["id"] not in texts]
    if missing:
        raise ValueError(f"teacher_predictions: no teacher reply for {missing[:5]}")
    preds = to_predictions(rows, [texts[r["id"]] for r in rows], [None] * len(rows), MODEL)
    accepted = {r["id"] for r in result.accepted}
    for p in preds:
        p["accepted"] = p["id"] in accepted
    return preds, result


def drift_flags(verdicts) -> dict[str, bool | None]:
    """id -> candidate judged worse (a drift case), None for a judge failure (unknown, never "no drift")."""
    return {v["id"]: (bool(v["candidate_worse"]) if v["status"] == "ok" else None) for v in verdicts}


def _wilson(k: int, n: int) -> str:
    from statsmodels.stats.proportion import proportion_confint
    if n == 0:
        return "–"
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def harm_profile(records, verdicts, pool_cases, n_items: int, accepted: int | None = None) -> dict:
    """One row of Table 22 from one audit pass: `records` every paired record (with delta, screened, h_candidate),
    `verdicts` the judge's records, `pool_cases` the drift pool. Percentages are of `n_items` (the test items)."""
    records, verdicts, cases = list(records), list(verdicts), list(pool_cases)
    failed = sum(v["status"] != "ok" for v in verdicts)
    n = len(cases)
    h = pd.Series([float(r["h_candidate"]) for r in records], dtype=float)
    row = {"items": n_items, "E.1-valid": accepted, "screened (Δ > τ)": int(sum(r["screened"] for r in records)),
           "judged": len(verdicts), "judge failures": failed, "drift cases": n,
           "drift %": round(100 * n / n_items, 1) if n_items else None, "drift 95% CI": _wilson(n, n_items)}
    for s in DRIFT_SEVERITIES:
        row[f"{s} %"] = round(100 * sum(c["severity"] == s for c in cases) / n_items, 1) if n_items else None
    novel = sum(bool(c["novel"]) for c in cases)
    row |= {"novel": novel, "amplified": n - novel,
            "novel % of drift": round(100 * novel / n, 1) if n else None,
            "median H(rationale)": float(h.median()) if len(h) else float("nan")}
    return row
