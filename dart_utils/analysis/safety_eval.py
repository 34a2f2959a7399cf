"""External safety evaluation of M0 vs M_DART (paper §3.4, App. O, App. P; Tables 5, 35, 36, 38, 40–43).

Why: the paper compares the two models' harm scores on held-out prompts per suite (Mann–Whitney U with rank-biserial
r, negative = M_DART safer, and the size-weighted r), their abstention (no valid output), and App. P breaks the
comparison down by identity group with Bonferroni correction. Abstention confounds harm scores (App. O.7: a model that
abstains writes less), so App. O.4 repeats the comparison on the prompts where M0 answered.

Conventions (docs/external_safety.md):
* Framing: every prompt goes through the App. E.3 classification prompt (policy off), as in the authors' code; the
  prompt is the "question".
* Abstention = no parsable conclusion (`parsing.parse_output(...).parsed` is False): refusals, hedges, empty and
  rambling outputs alike (the paper's "no valid output"); `abstention` / `abstention_rate`.
* The scored text is the analysis-only view: the rationale of a parsed output, the whole text of an unparsed one
  (what `parse_output(...).rationale` returns), an empty text scoring 0.
* Unpaired Mann–Whitney on all outputs of each model (the paper's test); `statistics.mann_whitney(x=M0, y=M_DART)`.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..core.paper import reported
from ..dart.parsing import parse_output
from .statistics import bonferroni, mann_whitney, significance_mark, weighted_r

MODELS = ("m0", "m_dart")


def abstention(parsed_flags: Iterable[bool]) -> float:
    """Abstention rate = the share of outputs without a parsable conclusion (NaN for no outputs).

    This is what the paper reports as abstention (M0 22.8 %, §3.4; Table 40). The authors' code counts an output
    without a "Conclusion: YES/NO" line, so refusals, hedges and empty answers all count.
    """
    flags = [bool(f) for f in parsed_flags]
    return 1 - sum(flags) / len(flags) if flags else float("nan")


def abstention_rate(texts: Iterable[str | None]) -> float:
    """Abstention rate of raw model outputs, using the project's parser (`parsing.parse_output`)."""
    return abstention(parse_output(t).parsed for t in texts)


def external_records(rows, texts: list[str], new_tokens: list[int], model: str) -> list[dict]:
    """One record per prompt: the suite's fields (prompt included), the raw output, its rationale and parse status
    (generation.cached_predictions' `make_records`)."""
    out = []
    for r, text, n in zip(rows, texts, new_tokens, strict=True):
        p = parse_output(text)
        out.append(dict(r) | {"model": model, "raw_text": text, "rationale": p.rationale, "prediction": p.conclusion,
                              "parsed": p.parsed, "failure": p.failure, "new_tokens": n})
    return out


def paired_frame(records: dict[str, list[dict]], scores: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """One row per prompt: suite fields, then per model `parsed_<m>`, `failure_<m>` and `<score>_<m>` for every
    score name. records: model -> records (same ids in the same order); scores: score name -> model -> values."""
    base = pd.DataFrame(records["m0"]).drop(columns=["model", "raw_text", "rationale", "prediction", "parsed",
                                                     "failure", "new_tokens"])
    for m in MODELS:
        recs = records[m]
        if [r["id"] for r in recs] != base["id"].tolist():
            raise ValueError(f"records of {m} are not aligned with m0's (same ids in the same order)")
        base[f"parsed_{m}"] = [bool(r["parsed"]) for r in recs]
        base[f"failure_{m}"] = [r["failure"] for r in recs]
        for s, by_model in scores.items():
            if len(by_model[m]) != len(recs):
                raise ValueError(f"{len(by_model[m])} {s} scores for {len(recs)} {m} records")
            base[f"{s}_{m}"] = np.asarray(by_model[m], float)
    return base


def _compare(df: pd.DataFrame, score: str) -> dict:
    x, y = df[f"{score}_m0"].to_numpy(), df[f"{score}_m_dart"].to_numpy()
    mw = mann_whitney(x, y) if len(df) else {"u": np.nan, "p": np.nan, "r": np.nan}
    med0, med1 = (float(np.median(x)), float(np.median(y))) if len(df) else (np.nan, np.nan)
    return {"n": len(df), "abstain_m0": float((~df["parsed_m0"]).mean()) if len(df) else np.nan,
            "abstain_m_dart": float((~df["parsed_m_dart"]).mean()) if len(df) else np.nan,
            f"median_{score}_m0": med0, f"median_{score}_m_dart": med1,
            "median_change_pct": 100 * (med1 / med0 - 1) if med0 else np.nan,
            "U": mw["u"], "p": mw["p"], "r_rb": mw["r"]}


def benchmark_table(df: pd.DataFrame, score: str) -> pd.DataFrame:
    """Table 5 / 35 for one score: per suite n, abstention of both models, medians, U, p, r (negative = M_DART
    safer) with the paper's r and M0 abstention beside (`reported("external")`, where the text states them); a last
    row with the size-weighted r (§3.4) and the pooled abstention."""
    paper = reported("external")
    rows = []
    for b, part in df.groupby("benchmark", sort=True):
        row = {"benchmark": b} | _compare(part, score)
        row["mark"] = significance_mark(row["p"], none="")
        row["paper_r_rb"] = paper.get("r_rb", {}).get(score, {}).get(b)
        row["paper_abstain_m0"] = paper.get("abstain_m0", {}).get(b)
        rows.append(row)
    t = pd.DataFrame(rows)
    if len(t):
        pooled = {"benchmark": "all (weighted r)", "n": int(t["n"].sum()),
                  "abstain_m0": float((~df["parsed_m0"]).mean()),
                  "abstain_m_dart": float((~df["parsed_m_dart"]).mean()),
                  "r_rb": weighted_r(t["r_rb"].tolist(), t["n"].tolist()),
                  "paper_r_rb": paper.get("weighted_r_rb", {}).get(score),
                  "paper_abstain_m0": paper.get("abstain_m0", {}).get("all")}
        t = pd.concat([t, pd.DataFrame([pooled])], ignore_index=True)
    return t


def subgroup_table(df: pd.DataFrame, by: str, score: str, alpha: float = 0.05) -> pd.DataFrame:
    """App. P (Tables 41–43): per group of `by`, the same comparison; Bonferroni over the groups (alpha / m),
    `significant` on the corrected threshold, marks on the raw p as in the paper's tables."""
    rows = [{by: g} | _compare(part, score) for g, part in df.groupby(by, sort=True)]
    t = pd.DataFrame(rows)
    if not len(t):
        return t
    bon = bonferroni(t["p"].fillna(1.0).tolist(), alpha)
    t["bonferroni_alpha"] = bon["alpha"]
    t["significant"] = bon["significant"]
    t["mark"] = [significance_mark(p, none="") for p in t["p"]]
    return t


def answered_subset_table(df: pd.DataFrame, score: str) -> pd.DataFrame:
    """App. O.4 (Table 36): per suite, the comparison on all prompts and on the prompts where M0 answered (parsed),
    so a change caused by M0's abstention (refusal -> engagement) is told apart from a change in what is written."""
    rows = []
    for b, part in df.groupby("benchmark", sort=True):
        for subset, sub in (("all prompts", part), ("M0 answered", part[part["parsed_m0"]])):
            c = _compare(sub, score)
            rows.append({"benchmark": b, "subset": subset, "n": c["n"], f"median_{score}_m0": c[f"median_{score}_m0"],
                         f"median_{score}_m_dart": c[f"median_{score}_m_dart"],
                         "median_change_pct": c["median_change_pct"], "r_rb": c["r_rb"], "p": c["p"]})
    return pd.DataFrame(rows)
