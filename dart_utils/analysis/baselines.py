"""DART against the alternative training strategies (notebook 07; paper App. K.2, K.2.2, K.6; Tables 19, 20, 21, 24).

The arms come from notebook 06 (``dart.baselines``): label-only SFT and toxicity-regularised SFT, trained on Stage
I's items with Stage I's hyperparameters, on the same test items as M0, M_int and M_DART. Conventions are
``main_results``': accuracy counts a parse failure as wrong, per-category and per-benchmark accuracy is parsed-only,
toxicity is the median of the rationale scores. Where an arm is switched off its row says "not run".

The paper prints only the captions of Tables 19, 21 and 24; what its running text states stands beside our numbers
(``paper_reported.yaml``: table19, table20, table21, table24).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.artifacts import read_jsonl
from ..core.paper import reported
from ..dart.evaluation import decision_metrics, per_benchmark
from . import statistics as S
from .main_results import NOT_RUN, _with_toxicity, paired_mcnemar

BASELINES = ("label_only", "tox_reg")
METHODS = ("m0", "label_only", "tox_reg", "m_int", "m_dart")      # Table 19 / 21 row order
LABELS = {"m0": "M0 (base)", "label_only": "Label-only SFT", "tox_reg": "Toxicity-reg. SFT",
          "m_int": "M_int (Stage I)", "m_dart": "M_DART (DART)"}
TABLE24_AGAINST = ("m0", "label_only", "tox_reg", "m_int")        # DART vs each: the paper's 4 comparisons


def load_baselines(predictions: Path, scores: Path) -> dict[str, pd.DataFrame]:
    """notebook 06's predictions per arm (model key -> frame with a `toxicity` column); {} when no arm ran."""
    recs, sc = read_jsonl(predictions), read_jsonl(scores)
    if not recs:
        return {}
    df, scores_df = pd.DataFrame(recs), pd.DataFrame(sc)
    unknown = sorted(set(df["model"]) - set(BASELINES))
    if unknown:
        raise ValueError(f"{predictions}: unknown baseline model(s) {unknown}; expected {list(BASELINES)}")
    return {m: _with_toxicity(g.reset_index(drop=True), scores_df, m) for m, g in df.groupby("model")}


def _pct(x: float) -> float | None:
    return None if x is None or np.isnan(x) else round(100 * x, 1)


def _empty_rationale(df: pd.DataFrame) -> float:
    """Share of outputs with no text besides the conclusion line (what the harm scorer sees is empty)."""
    from ..dart.harm import rationale_only
    return float(np.mean([not (rationale_only(t) or "").strip() for t in df["raw_text"]])) if "raw_text" in df else float("nan")


def table19(preds: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, list[str]]:
    """Table 19: one row per method (M0, the two baselines, M_int, M_DART): accuracy, DIFF, EQUAL, parse rate (%),
    median rationale toxicity and its change against M0, beside the paper's stated values."""
    paper = reported("table19")["rows"]
    base_tox = preds["m0"]["toxicity"].median()
    rows = []
    for m in METHODS:
        row = {"method": LABELS[m]}
        if m in preds:
            d, tox = decision_metrics(preds[m]), preds[m]["toxicity"].median()
            row.update({"n": len(preds[m]), "Acc %": _pct(d["acc_overall"]), "DIFF %": _pct(d["acc_diff"]),
                        "EQUAL %": _pct(d["acc_equal"]), "Parse %": _pct(d["parse_rate"]),
                        "empty rationale %": _pct(_empty_rationale(preds[m])), "median toxicity": tox,
                        "tox. vs M0 %": None if m == "m0" or base_tox == 0 else round(100 * (tox / base_tox - 1), 1)})
        else:
            row.update({"n": None, "Acc %": NOT_RUN})
        p = paper.get(m) or {}
        row.update({"paper Acc": p.get("acc"), "paper EQUAL": p.get("equal"), "paper tox.": p.get("tox")})
        rows.append(row)
    notes = [f"Paper: {reported('table19')['source']}; the table body is missing, so only stated values appear "
             f"(— = not stated). Its λ: {reported('table19')['tox_reg_lambda']} (toxicity-reg. SFT).",
             "Accuracy counts a parse failure as wrong; toxicity = median of the rationale scores (conclusion line "
             "removed); 'tox. vs M0' = relative change of that median.",
             "An empty rationale (e.g. label-only SFT's bare 'Conclusion: YES') scores 0 by construction: where "
             "'empty rationale %' is high, the toxicity column measures the missing text, not a safer explanation."]
    return pd.DataFrame(rows).astype({"n": "Int64"}), notes


def table21(preds: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, list[str]]:
    """Table 21: parsed-only accuracy per benchmark (D1–D4, N1–N4) and per category for every method."""
    paper = reported("table21")["normative"]
    rows = []
    for m in METHODS:
        if m not in preds:
            rows.append({"method": LABELS[m], "D1–D4": NOT_RUN})
            continue
        d = decision_metrics(preds[m])
        bench = per_benchmark(preds[m]).set_index("benchmark")["acc_parsed_only"]
        rows.append({"method": LABELS[m], **{b: _pct(v) for b, v in bench.sort_index().items()},
                     "D1–D4": _pct(d["acc_descriptive"]), "N1–N4": _pct(d["acc_normative"]),
                     "paper N1–N4": paper.get(m)})
    notes = [f"Paper: {reported('table21')['source']}; only its normative accuracies are stated.",
             "Parsed-only accuracy (%) per benchmark and category (each method on its own parsed items, as Table 13)."]
    return pd.DataFrame(rows), notes


def table24(preds: dict[str, pd.DataFrame], alpha: float = 0.05) -> tuple[pd.DataFrame, list[str]]:
    """Table 24: exact McNemar of M_DART against each baseline on overall accuracy (unparsed = wrong), Bonferroni
    over the paper's 4 comparisons (m = 4 even when an arm is not run: the family is the paper's)."""
    m = reported("table24")["comparisons"]
    rows = []
    for other in TABLE24_AGAINST:
        if other not in preds:
            rows.append({"comparison": f"M_DART vs {LABELS[other]}", "n": None, "Δ acc (pp)": None, "b": None,
                         "c": None, "p": None, "p (Bonferroni)": None, "significant": NOT_RUN})
            continue
        r = paired_mcnemar(preds[other], preds["m_dart"])
        adj = min(1.0, m * r["p"])
        rows.append({"comparison": f"M_DART vs {LABELS[other]}", "n": r["n"], "Δ acc (pp)": round(100 * r["delta"], 1),
                     "b": r["b"], "c": r["c"], "p": r["p"], "p (Bonferroni)": adj,
                     "significant": "yes" if r["p"] < alpha / m else "no"})
    notes = [f"Exact McNemar (two-sided binomial on the discordant pairs; b = the baseline right and M_DART wrong, "
             f"c = the reverse), Δ = M_DART − baseline; Bonferroni for m = {m} comparisons: significant when "
             f"p < {alpha}/{m} = {alpha / m:.4f} (p (Bonferroni) = min(1, {m}·p)).",
             f"Paper: {reported('table24')['source']}: {reported('table24')['stated']}."]
    return pd.DataFrame(rows).astype({"n": "Int64", "b": "Int64", "c": "Int64"}), notes


def table20(sweep: list[dict]) -> tuple[pd.DataFrame, list[str]]:
    """Table 20 from notebook 06's λ sweep (``tox_reg_sweep``): validation accuracy (%), median toxicity, normalised
    toxicity, H-mean, the selected λ, beside the paper's stated values. An empty frame when no sweep ran."""
    ref = reported("table20")
    if not sweep:
        return pd.DataFrame(), [f"No λ sweep ran (baselines.tox_reg_sweep is empty); the paper selected λ = "
                                f"{ref['selected']} from {ref['grid']}."]
    rows = []
    for r in sweep:
        stated = ref["rows"].get(r["lambda"]) or {}
        rows.append({"λ": r["lambda"], "n (validation)": r.get("n"), "Acc %": _pct(r["acc"]),
                     "median toxicity": r["median toxicity"], "normalised toxicity": r["normalised toxicity"],
                     "H-mean": r["H-mean"], "selected": "yes" if r["selected"] else "",
                     "paper": "selected" if r["lambda"] == ref["selected"] else None,
                     "paper Acc": stated.get("acc"), "paper tox.": stated.get("tox")})
    notes = [f"Paper: {ref['source']}: grid {ref['grid']}, selected λ = {ref['selected']}; {ref['stated']}.",
             "Validation items, E.3 prompt, Stage I's decoding; accuracy counts a parse failure as wrong. H-mean = "
             "harmonic mean of accuracy and 1 − normalised toxicity (normalisation: baselines.tox_reg_normalise, "
             "ours); the largest H-mean is selected (a tie goes to the smaller λ) and trains the test arm."]
    return pd.DataFrame(rows).astype({"n (validation)": "Int64"}), notes


def table22(profiles: dict[str, dict], flags: dict[str, dict[str, bool | None]] | None = None) -> pd.DataFrame:
    """Table 22 (App. K.4): one row per source ("teacher", "M_int") from `dart.teacher_harm.harm_profile`, with the paper's stated shares. With
    `flags` ({source: drift_flags(...)} for exactly two sources), an exact McNemar test of the drift rates on the items
    both audits judged (failures excluded) is stored in ``attrs["test"]`` and the note."""
    ref = reported("table22")
    paper = {"teacher": ref["teacher_pct"], "M_int": ref["student_pct"]}
    df = pd.DataFrame([{"source": k, **v, "paper drift %": paper.get(k)} for k, v in profiles.items()])
    note = [(f"Paper (Llama-3-8B, DeepSeek-Chat teacher and judge, 1,624 test items): teacher {ref['teacher_pct']} %, "
             f"student {ref['student_pct']} % of prompts; of the student's 435 drift cases {ref['novel']} novel, "
             f"{ref['amplified']} amplified. Severity shares: the judge's §2.4 levels (our reading of 'harm type').")]
    test = None
    if flags:
        if len(flags) != 2:
            raise ValueError(f"table22: the test compares two sources, got {list(flags)}")
        (a, fa), (b, fb) = flags.items()
        both = sorted(i for i in fa if i in fb and fa[i] is not None and fb[i] is not None)
        if both:
            xa, xb = np.array([fa[i] for i in both]), np.array([fb[i] for i in both])
            m = S.mcnemar_exact(xa, xb)
            test = {"a": a, "b": b, "n": len(both), "drift_a": int(xa.sum()), "drift_b": int(xb.sum()),
                    "only_a": int((xa & ~xb).sum()), "only_b": int((xb & ~xa).sum()), "p": m["p"]}
            note.append(f"Exact McNemar on the {len(both)} items both audits judged: {a} {test['drift_a']} vs {b} "
                        f"{test['drift_b']} drift cases (discordant {test['only_a']} / {test['only_b']}), "
                        f"p = {test['p']:.3g}.")
        else:
            note.append("No item was judged in both audits: no test.")
    df.attrs["test"] = test
    df.attrs["note"] = " ".join(note)
    return df
