"""Table 14 (paper App. I.1): the open-ended judge's verdicts as rates per domain with CIs, paired tests and the
pairwise win rate. The answers and verdicts come from notebook 12 (`dart_utils/dart/open_ended.py`)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from ..core.paper import reported
from ..dart.open_ended import MEASURES
from ..data.open_ended import DOMAINS
from .statistics import accuracy_ci, mcnemar_exact


def win_rate(outcomes: list[str], n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Outcomes "win" / "tie" / "loss" / "failure" of one model against another: wins, ties, losses, failures
    (left out), (wins + ties/2) / judged with a bootstrap 95 % CI, and an exact two-sided
    sign test of wins against losses."""
    judged = [o for o in outcomes if o != "failure"]
    w, loss, t = judged.count("win"), judged.count("loss"), judged.count("tie")
    out = {"n": len(outcomes), "judged": len(judged), "failures": len(outcomes) - len(judged), "wins": w,
           "losses": loss, "ties": t, "win_rate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
           "p_sign_test": float(binomtest(w, w + loss, 0.5).pvalue) if w + loss else 1.0}
    if judged:
        score = np.array([{"win": 1.0, "tie": 0.5, "loss": 0.0}[o] for o in judged])
        ci = accuracy_ci(score, n_resamples=n_resamples, seed=seed)   # the mean of the 1 / ½ / 0 scores
        out |= {"win_rate": ci["estimate"], "ci_low": ci["lo"], "ci_high": ci["hi"]}
    return out


# ---- Table 14 ------------------------------------------------------------------------------------------------------
def rate_ci(x: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float, float]:
    """(rate, low, high) of a 0/1 array: the bootstrap 95 % CI of `statistics.accuracy_ci`; NaN when empty."""
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    ci = accuracy_ci(x.astype(float), n_resamples=n_resamples, seed=seed)
    return ci["estimate"], ci["lo"], ci["hi"]


def _fmt(est: float, lo: float, hi: float) -> str:
    return "–" if np.isnan(est) else f"{100 * est:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def judged_frame(items: list[dict], records_by_model: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per (model, item): domain, labels, status and the measures (the judge records of one arm)."""
    meta = {it["id"]: it for it in items}
    rows = []
    for model, recs in records_by_model.items():
        for r in recs:
            it = meta[r["id"]]
            rows.append({"model": model, "id": r["id"], "domain": it["domain"],
                         "demographics_relevant": it["demographics_relevant"],
                         "harmful_premise": it["harmful_premise"], "status": r["status"],
                         **{m: r.get(m) for m in MEASURES}})
    return pd.DataFrame(rows)


def table14(df: pd.DataFrame, models=("m0", "m_int", "m_dart"), base: str = "m0", target: str = "m_dart",
            n_resamples: int = 2_000, seed: int = 42) -> pd.DataFrame:
    """Table 14 from `judged_frame`: per domain (and "overall") and measure, each model's rate with a bootstrap 95 %
    CI over the items it was judged on (failures left out and counted), `target` − `base` in pp, and the exact
    McNemar p of base vs target on the items both were judged on. harmful_premise_handled is over premise items."""
    ref = reported("table14")
    rows = []
    for domain in (*DOMAINS, "overall"):
        d = df if domain == "overall" else df[df["domain"] == domain]
        for m in MEASURES:
            sub = d[d["harmful_premise"]] if m == "harmful_premise_handled" else d
            row = {"domain": domain, "measure": m, "items": int(sub["id"].nunique())}
            ok = sub[sub["status"] == "ok"]
            for model in models:
                x = ok[ok["model"] == model][m].astype(bool).to_numpy()
                row[model] = _fmt(*rate_ci(x, n_resamples, seed))
                row[f"{model} failures"] = int(((sub["model"] == model) & (sub["status"] != "ok")).sum())
            a = ok[ok["model"] == base].set_index("id")[m]
            b = ok[ok["model"] == target].set_index("id")[m]
            both = a.index.intersection(b.index)
            if len(both):
                t = mcnemar_exact(a[both].astype(bool).to_numpy(), b[both].astype(bool).to_numpy())
                row |= {f"Δ {target}−{base} (pp)": round(100 * (t["acc_b"] - t["acc_a"]), 1), "paired n": len(both),
                        "McNemar p": t["p"]}
            else:
                row |= {f"Δ {target}−{base} (pp)": None, "paired n": 0, "McNemar p": None}
            paper = ref["overall"].get(m) if domain == "overall" else None
            row |= {"paper M0": paper[0] if paper else None, "paper M_DART": paper[1] if paper else None}
            rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["note"] = (f"Rates in % with bootstrap 95 % CIs ({n_resamples} resamples) over the items each model was "
                         "judged on; judge failures are counted, never a verdict. harmful_premise_handled: premise "
                         f"items only. McNemar: exact, {base} vs {target}, items both were judged on. Paper: "
                         f"{ref['source']} (overall only; per-domain values are not in the text). Our queries are "
                         "not the paper's (../shared/data/open_ended/SOURCE.md).")
    return out


def win_table(items: list[dict], outcomes: list[dict], n_resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """The pairwise win rate of the first model (M_DART) per domain and overall: wins / judged (the rubric's primary
    rate), (wins + ties/2) / judged with a bootstrap 95 % CI, and an exact sign test of wins vs losses."""
    dom = {it["id"]: it["domain"] for it in items}
    ref = reported("table14")
    rows = []
    for domain in (*DOMAINS, "overall"):
        oc = [o["outcome"] for o in outcomes if domain == "overall" or dom[o["id"]] == domain]
        w = win_rate(oc, n_resamples=n_resamples, seed=seed) if oc else None
        if w is None:
            continue
        rows.append({"domain": domain, "items": w["n"], "judged": w["judged"], "failures": w["failures"],
                     "wins": w["wins"], "ties": w["ties"], "losses": w["losses"],
                     "win rate %": round(100 * w["wins"] / w["judged"], 1) if w["judged"] else None,
                     "(wins + ties/2) %": round(100 * w["win_rate"], 1) if w["judged"] else None,
                     "95% CI": (f"[{100 * w['ci_low']:.1f}, {100 * w['ci_high']:.1f}]" if w["judged"] else "–"),
                     "sign test p": w["p_sign_test"],
                     "paper win rate %": ref["win_rate"] if domain == "overall" else None})
    out = pd.DataFrame(rows)
    out.attrs["note"] = ("Pairwise judge, M_DART vs M0, each pair in both orders: a win needs M_DART preferred in both, "
                         "anything else is a tie (rubric §4). Failures (an order without a valid reply) are counted "
                         "and left out. Paper: 82.1 % over M0 (App. I.1, GPT-4 judge).")
    return out
