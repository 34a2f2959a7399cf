"""App. L's second judge (Tables 25, 26): is drift detection robust to the choice of judge?

Why: the paper re-judges Stage II with GPT-4 beside DeepSeek-Chat: "GPT-4 detects slightly fewer drift cases (412 vs.
435) ... The 378 cases detected by both judges represent the high-confidence drift case set", with inter-judge
κ = 0.74 (Table 25). Notebook 06 (`baselines.judge_choice`) sends Stage II's judged pairs to `judge_b` with the same
prompt, order and retries (`audit.run_audit`), and this module sets both judges' drift cases side by side.

Table 26 is titled "Impact of judge selection on Stage III repair": "GPT-4 ... achieves comparable final accuracy and
toxicity". So judge B's pool also goes through Stage III in notebook 06: E.2 repair targets for its drift cases (the
same teacher, filter and retries as notebook 03; cases both judges found are cache hits), severity-weighted Stage III
from the Stage I adapter, inference, and a re-audit by judge B. Each judge's M_DART is audited by its own judge.

Choices (``[choice]``; the paper does not say or we cannot run it):
* Each judge re-audits its own M_DART (the paper does not say which judge audited which model).
* Table 25's human columns need the App. L annotation sheets (none are filled); its inter-judge κ is computed here.
"""
from __future__ import annotations

import math

import pandas as pd

from ..dart.audit import compare_audits
from . import statistics as S


def _wilson(k: int, n: int) -> str:
    from statsmodels.stats.proportion import proportion_confint
    if not n:
        return "–"
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def judge_row(label: str, model: str, verdicts: list[dict], n_drift: int, n_items: int) -> dict:
    """One judge's Stage II counts: pairs judged, failures (unknown, never "no drift"), drift cases with a Wilson CI
    over the test items."""
    failed = sum(v["status"] != "ok" for v in verdicts)
    return {"judge": label, "model": model, "judged": len(verdicts), "judge failures": failed,
            "drift cases": n_drift, "drift %": round(100 * n_drift / n_items, 1) if n_items else None,
            "drift 95% CI": _wilson(n_drift, n_items)}


def _after(a: dict | None) -> str:
    if a is None:
        return "not run"
    return (f"M_DART acc {100 * a['acc']:.1f} %, EQUAL {100 * a['equal']:.1f} %, median H {a['tox']:.3g}, "
            f"remaining drift {a['remaining']}" + (f" ({a['repaired']} repair targets)" if "repaired" in a else ""))


def table26(rows: list[dict], flags_a: dict, flags_b: dict, after_a: dict | None, paper26: dict,
            paper25: dict, after_b: dict | None = None) -> pd.DataFrame:
    """Table 26: the primary judge's and the second judge's rows, the cases both found (the high-confidence set), each
    judge's M_DART after Stage III (`after_a`, `after_b`: accuracy, EQUAL, median toxicity, remaining drift, optional
    repair targets; None = not run), the paper's counts beside them. attrs["agreement"]: `audit.compare_audits` of B against A (κ, overlap);
    attrs["test"]: exact McNemar of the two judges' drift flags on the items both decided."""
    if len(rows) != 2:
        raise ValueError(f"table26 compares two judges, got {len(rows)} rows")
    agree = compare_audits(flags_a, flags_b)
    common = [i for i in flags_a if flags_a[i] is not None and flags_b.get(i) is not None]
    test = S.mcnemar_exact([flags_a[i] for i in common], [flags_b[i] for i in common]) if common else None
    paper = paper26["drift"]
    out = [dict(rows[0]) | {"paper drift cases": paper["primary"], "paper judge": paper26["judges"]["primary"]},
           dict(rows[1]) | {"paper drift cases": paper["second"], "paper judge": paper26["judges"]["second"]},
           {"judge": "both (high-confidence set)", "model": "", "judged": agree["n"], "judge failures": None,
            "drift cases": agree["tp"], "drift %": None, "drift 95% CI": "", "paper drift cases": paper["both"],
            "paper judge": "both"}]
    out[0]["after Stage III"], out[1]["after Stage III"], out[2]["after Stage III"] = _after(after_a), _after(after_b), "–"
    df = pd.DataFrame(out, columns=["judge", "model", "judged", "judge failures", "drift cases", "drift %",
                                    "drift 95% CI", "after Stage III", "paper judge", "paper drift cases"])
    kappa = "–" if math.isnan(agree["kappa"]) else f"{agree['kappa']:.2f}"
    df.attrs["agreement"], df.attrs["test"] = agree, test
    df.attrs["note"] = (
        f"Inter-judge agreement on the {agree['n']} pairs both judges decided: Cohen's κ = {kappa} (paper, Table 25: "
        f"{paper25['inter_judge_kappa']:.2f}); drift cases only the primary judge found {agree['fn']}, only the second "
        f"{agree['fp']}" + (f"; exact McNemar p = {test['p']:.3g}" if test else "") + ". Table 25's judge-human κ "
        f"(paper {paper25['judge_human_kappa']['primary']:.2f} / {paper25['judge_human_kappa']['second']:.2f}) needs "
        "the filled App. L sheets: none exist.")
    return df
