"""The paper's main decision-quality and statistics outputs, recomputed from a run's artifacts (notebook 07; paper
§3.1–3.3, App. H, J, K.1, K.3; Tables 2, 4, 13, 16; Figure 3; the §3.2 toxicity shifts).

Why: the authors' code produced Table 2 with raw McNemar p-values and no effect sizes, and the paper's Table 4
marks, Figure 3 error bars and toxicity CIs have no code behind them. This module derives every one of them from the
prediction and harm-score files the earlier stages wrote, with the tests of `statistics.py`, and puts the paper's
stated numbers beside ours (`core.paper.reported`, from `paper_reported.yaml`). Conventions (docs/statistics.md):

* Overall / DIFF / EQUAL accuracy count a parse failure as wrong; D1–D4 / N1–N4 rows (Table 2) and Table 13 are
  parsed-only (each model on its own parsed items, as the paper reports them). A paired test needs one item set, so
  McNemar on a parsed-only row uses the items BOTH models parsed (`statistics.paired_correctness`).
* Table 2 marks: exact McNemar per accuracy row (and Parse %, on the parsed indicator), Bonferroni over
  `statistics.bonferroni_comparisons` (paper: 15 → α .0033), marks of the adjusted p (`statistics.significance_mark`).
  Macro-F1 has no McNemar test: its rows carry no mark of ours.
* Table 4 marks follow `table4_mark`, a documented rule on measured deltas (params `statistics.table4`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.artifacts import read_jsonl
from ..core.paper import reported
from ..dart.evaluation import decision_metrics, per_benchmark, under_rule
from . import statistics as S

MODELS = ("m0", "m_int", "m_dart")
MODEL_LABELS = {"m0": "M0", "m_int": "M_int", "m_dart": "M_DART"}
FALLBACK_STUDENT = "llama-3-8b-instruct"       # the paper's primary student
NOT_TESTED = "n/t"
NO_TEST = "n/a"                                # a test was meant but there are no paired items

# Table 2 rows: (metric key of evaluation.decision_metrics, label, convention, test)
# test: ("acc", subset, parsed_only) for McNemar on correctness, ("parse",) for McNemar on the parsed indicator.
TABLE2_ROWS = [
    ("acc_descriptive", "Accuracy D1–D4", "parsed only", ("acc", ("category", "descriptive"), True)),
    ("acc_normative", "Accuracy N1–N4", "parsed only", ("acc", ("category", "normative"), True)),
    ("acc_overall", "Accuracy Overall", "unparsed = wrong", ("acc", None, False)),
    ("acc_diff", "DIFF Acc", "unparsed = wrong", ("acc", ("condition", "DIFF"), False)),
    ("acc_equal", "EQUAL Acc", "unparsed = wrong", ("acc", ("condition", "EQUAL"), False)),
    ("f1_descriptive", "Macro-F1 D1–D4", "parsed only", None),
    ("f1_normative", "Macro-F1 N1–N4", "parsed only", None),
    ("f1_overall", "Macro-F1 Overall", "unparsed = wrong", None),
    ("parse_rate", "Parse %", "all items", ("parse",)),
    # the same under the authors' first-match parse rule (evaluation.under_rule), the one the paper counted with
    ("acc_overall_first_match", "Accuracy Overall [first-match]", "unparsed = wrong", ("acc", None, False)),
    ("acc_diff_first_match", "DIFF Acc [first-match]", "unparsed = wrong", ("acc", ("condition", "DIFF"), False)),
    ("acc_equal_first_match", "EQUAL Acc [first-match]", "unparsed = wrong", ("acc", ("condition", "EQUAL"), False)),
    ("parse_rate_first_match", "Parse % [first-match]", "all items", ("parse",)),
]
FIRST_MATCH = "_first_match"
# Table 16 metrics: (label, subset, parsed_only)
TABLE16_METRICS = [("Overall", None, False), ("DIFF", ("condition", "DIFF"), False),
                   ("EQUAL", ("condition", "EQUAL"), False), ("Descriptive (D1–D4)", ("category", "descriptive"), True),
                   ("Normative (N1–N4)", ("category", "normative"), True)]
TABLE16_PAPER_KEY = {"DIFF": "acc_diff", "EQUAL": "acc_equal"}
COMPARISONS = (("m0", "m_dart"), ("m0", "m_int"), ("m_int", "m_dart"))

# Table 4 components: key, label, comparison description; (model, mode) before -> after. mode None = no policy
# (prediction files of stages 01/03); a mode reads 04_policy/policy_outputs.jsonl.
TABLE4_COMPONENTS = [
    ("policy_m0", "Policy (on M0)", "M0 two-pass policy vs M0 policy off", ("m0", "off"), ("m0", "two_pass")),
    ("label_only_sft", "Label-only SFT", "label-only SFT vs M0 (no policy; notebook 06)", ("m0", None),
     ("label_only", None)),
    ("tox_reg_sft", "Toxicity-reg. SFT", "toxicity-reg. SFT vs M0 (no policy; notebook 06)", ("m0", None),
     ("tox_reg", None)),
    ("stage1", "Stage I: Distillation", "M_int vs M0 (no policy)", ("m0", None), ("m_int", None)),
    ("stage3", "Stage III: Repair", "M_DART vs M_int (no policy)", ("m_int", None), ("m_dart", None)),
    ("full_dart_policy", "Full DART + Policy", "M_DART two-pass policy vs M0 policy off",
     ("m0", "off"), ("m_dart", "two_pass")),
]
TABLE4_METRICS = (("acc", "Acc"), ("equal", "EQUAL"), ("tox", "Tox.↓"), ("parse", "Parse%"))
NOT_RUN = "not run"
CHECK, DOUBLE, CROSS, TILDE = "✓", "✓✓", "✗", "∼"


# ---- artifacts --------------------------------------------------------------------------------------------------
# What notebook 07 reads: artifact names of dart_utils/stages.yaml (the stage context resolves them to files).
ARTIFACTS = ("predictions_m0", "predictions_m_int", "predictions_m_dart", "harm_scores", "harm_scores_m_dart",
             "harm_scorers", "drift_pool", "drift_pool_m_dart", "repair_targets", "policy_outputs")


@dataclass
class RunData:
    """One run's predictions (per model, with a `toxicity` column), drift pools and policy outputs."""
    preds: dict[str, pd.DataFrame]
    pool_before: list[dict] = field(default_factory=list)
    pool_after: list[dict] = field(default_factory=list)
    repaired_ids: list[str] = field(default_factory=list)
    policy: pd.DataFrame | None = None
    scorer: dict = field(default_factory=dict)


def _with_toxicity(df: pd.DataFrame, scores: pd.DataFrame, model: str) -> pd.DataFrame:
    tox = scores[scores["model"] == model].set_index("id")["toxicity"]
    if tox.index.has_duplicates:
        raise ValueError(f"harm scores: duplicate ids for {model}")
    missing = set(df["id"]) - set(tox.index)
    if missing:
        raise ValueError(f"harm scores: {len(missing)} {model} items have no toxicity score, e.g. {sorted(missing)[:3]}")
    return df.assign(toxicity=df["id"].map(tox).astype(float))


def load_run(paths: dict[str, Path]) -> RunData:
    """Read the artifacts named in ARTIFACTS (name -> path) into a RunData (toxicity joined on id)."""
    missing = sorted(set(ARTIFACTS) - set(paths))
    if missing:
        raise KeyError(f"load_run needs the artifacts {missing}")
    preds = {m: pd.DataFrame(read_jsonl(paths[f"predictions_{m}"])) for m in MODELS}
    scores = pd.concat([pd.DataFrame(read_jsonl(paths["harm_scores"])),
                        pd.DataFrame(read_jsonl(paths["harm_scores_m_dart"]))], ignore_index=True)
    preds = {m: _with_toxicity(df, scores, m) for m, df in preds.items()}
    scorer = json.loads(Path(paths["harm_scorers"]).read_text(encoding="utf-8")).get("toxicity", {})
    return RunData(preds=preds, pool_before=read_jsonl(paths["drift_pool"]),
                   pool_after=read_jsonl(paths["drift_pool_m_dart"]),
                   repaired_ids=[r["id"] for r in read_jsonl(paths["repair_targets"])],
                   policy=pd.DataFrame(read_jsonl(paths["policy_outputs"])), scorer=scorer)


def scorer_notes(scorer: dict) -> list[str]:
    """The classifier-substitution note of `harm.substitution_notes`, from 02's scorer descriptions (harm_scorers)."""
    sub = scorer.get("substitution")
    return [f"Classifier substitution: {scorer.get('model')} instead of the paper's RoBERTa classifiers — {sub}"
            ] if sub else []


def policy_frame(policy: pd.DataFrame, model: str, mode: str) -> pd.DataFrame:
    """One (model, mode) slice of 04's policy_outputs, in the prediction-frame layout (toxicity included)."""
    part = policy[(policy["model"] == model) & (policy["mode"] == mode)]
    if part.empty:
        raise ValueError(f"policy outputs hold no rows for model {model!r}, mode {mode!r}")
    return part.reset_index(drop=True)


def paper_student(student: str, table: dict) -> tuple[str, str | None]:
    """The paper's key for this student, and a note when we fall back to the primary student."""
    if student in table:
        return student, None
    return FALLBACK_STUDENT, (f"The paper reports no {student}; paper columns are its primary student "
                              f"{FALLBACK_STUDENT}.")


# ---- paired tests -----------------------------------------------------------------------------------------------
def _subset(df: pd.DataFrame, subset) -> pd.DataFrame:
    return df if subset is None else df[df[subset[0]] == subset[1]]


def paired_mcnemar(a: pd.DataFrame, b: pd.DataFrame, subset=None, parsed_only: bool = False,
                   on: str = "correct") -> dict:
    """Exact McNemar (with b, c, Cohen's g) of model A vs B on the same items, optionally on a subset
    (("condition", "EQUAL"), ("category", "descriptive")); parsed_only keeps items both parsed; on="parsed" tests
    the parse indicator instead of correctness. p is NaN when no paired item is left."""
    a, b = _subset(a, subset), _subset(b, subset)
    if on == "parsed":
        S.paired_correctness(a, b)                      # the same checks: unique ids, the same items
        x = a.set_index("id")["parsed"]
        ca, cb = x.to_numpy(bool), b.set_index("id")["parsed"].loc[x.index].to_numpy(bool)
    else:
        ca, cb = S.paired_correctness(a, b, parsed_only=parsed_only)
    r = S.mcnemar_exact(ca, cb)
    if r["n"] == 0:
        r["p"] = float("nan")
    return r


def _mark(p: float, alpha: float) -> str:
    return NO_TEST if p is None or np.isnan(p) else S.significance_mark(p, alpha=alpha)


def _r3(v) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else round(float(v), 3)


# ---- Table 2 ----------------------------------------------------------------------------------------------------
def table2(m0: pd.DataFrame, m_dart: pd.DataFrame, student: str, alpha: float = 0.05,
           comparisons: int = S.TABLE2_COMPARISONS) -> tuple[pd.DataFrame, list[str]]:
    """Table 2 for one student: this run's M0 and M_DART beside the paper's, Δ = M_DART − M0, exact McNemar p on the
    paired items (n), Bonferroni-adjusted p (min(1, m·p), m = `comparisons`) and its mark; returns (table, notes)."""
    key, fallback = paper_student(student, reported("table2"))
    paper = reported("table2")[key]
    marks = {**reported("table2_marks")["acc"], **reported("table2_marks")["f1"]}
    ma, mb = decision_metrics(m0), decision_metrics(m_dart)
    rows = []
    for metric, label, convention, test in TABLE2_ROWS:
        if np.isnan(ma[metric]) and metric.endswith(FIRST_MATCH):
            continue                # a frame without raw texts (or first-match columns) has no first-match view
        row = {"metric": label, "convention": convention, "this run M0": _r3(ma[metric]),
               "this run M_DART": _r3(mb[metric]), "Δ": _r3(mb[metric] - ma[metric])}
        if test is None:
            row |= {"n tested": None, "p": None, "p (Bonferroni)": None, "mark": NOT_TESTED}
        else:
            rule = "first_match" if metric.endswith(FIRST_MATCH) else "strict"
            a, b = under_rule(m0, rule), under_rule(m_dart, rule)
            r = (paired_mcnemar(a, b, on="parsed") if test[0] == "parse"
                 else paired_mcnemar(a, b, subset=test[1], parsed_only=test[2]))
            p_adj = None if np.isnan(r["p"]) else min(1.0, r["p"] * comparisons)
            row |= {"n tested": r["n"], "p": None if np.isnan(r["p"]) else r["p"], "p (Bonferroni)": p_adj,
                    "mark": _mark(r["p"], alpha / comparisons)}
        base = metric.removesuffix(FIRST_MATCH)      # the paper's value stands beside both parse rules' rows
        p0, p1 = paper["m0"].get(base), paper["m_dart"].get(base)
        row |= {"paper M0": p0, "paper M_DART": p1,
                "paper Δ": None if p0 is None or p1 is None else round(p1 - p0, 3),
                "paper mark": marks.get(base, "")}
        rows.append(row)
    notes = [f"Paper: Table 2, {key}.", (f"Marks: exact McNemar, Bonferroni over {comparisons} comparisons "
             f"(adjusted α = {alpha}/{comparisons} = {alpha / comparisons:.4f}); *** / ** / * = adjusted p < .001 / .01 "
             "/ .05, – = not significant, n/t = not tested (no McNemar test for macro-F1), n/a = no paired items."),
             ("Overall, DIFF and EQUAL count a parse failure as wrong; D1–D4 / N1–N4 rows are parsed-only (each model on "
             "its own parsed items); their McNemar test uses the items both models parsed (n tested)."),
             "Parse %: McNemar on the parsed indicator (the paper marks no test on it).",
             ("Parse rules: rows without a tag use our strict parser (dart_utils/dart/parsing.py), which every headline "
              "number uses; rows tagged [first-match] re-parse the same outputs with the authors' rule (the first "
              "'Conclusion: YES|NO' anywhere, also 'Conclusion: Yes, because ...'), the convention behind the paper's "
              "parse rates, so those rows are the ones comparable with the paper's columns (shown beside both). The "
              f"first-match rows are a comparison view: the Bonferroni m stays {comparisons}.")]
    df = pd.DataFrame(rows).astype({"n tested": "Int64"})
    return df, notes + ([fallback] if fallback else [])


# ---- Table 13 ---------------------------------------------------------------------------------------------------
def _average_row(label: str, part: pd.DataFrame) -> dict:
    k = int(part["this run M0"].notna().sum()), int(part["this run M_DART"].notna().sum())
    return {"benchmark": label, "type": "", "n": int(part["n"].sum()),
            "parsed M0": int(part["parsed M0"].sum()), "parsed M_DART": int(part["parsed M_DART"].sum()),
            **{c: (int(part[c].sum()) if part[c].notna().all() else None)
               for c in ("parsed M0 [first-match]", "parsed M_DART [first-match]")},
            "this run M0": _r3(part["this run M0"].mean()), "this run M_DART": _r3(part["this run M_DART"].mean()),
            "Δ": _r3(part["Δ"].mean()) if k == (len(part), len(part)) else None, "benchmarks averaged": f"M0 {k[0]}, M_DART {k[1]} of {len(part)}",
            "paper M0": None, "paper M_DART": None, "paper Δ (pp)": None}


def _first_match_counts(a: pd.DataFrame, b: pd.DataFrame, bench: str) -> dict:
    """Parsed counts under the first-match rule (None where a frame cannot give them)."""
    def n(x):
        v = x.loc[bench, "parse_rate_first_match"] * x.loc[bench, "n"]
        return None if np.isnan(v) else round(v)
    return {"parsed M0 [first-match]": n(a), "parsed M_DART [first-match]": n(b)}


def table13(m0: pd.DataFrame, m_dart: pd.DataFrame, student: str) -> tuple[pd.DataFrame, list[str]]:
    """Table 13: per benchmark n, parsed counts and parsed-only accuracy of M0 and M_DART with Δ, then D-Average and
    N-Average (unweighted means over the benchmarks that have a value); the paper's values where App. H states them."""
    ref = reported("table13")
    key, fallback = paper_student(student, ref)
    paper = ref[key]
    a, b = per_benchmark(m0).set_index("benchmark"), per_benchmark(m_dart).set_index("benchmark")
    types = m0.groupby("benchmark")["category"].first()
    rows = []
    for bench in sorted(a.index):
        acc0, acc1 = a.loc[bench, "acc_parsed_only"], b.loc[bench, "acc_parsed_only"]
        at_least = paper.get("m_dart_at_least", {}).get(bench)
        exact = paper.get("m_dart", {}).get(bench)
        rows.append({"benchmark": bench, "type": types[bench], "n": int(a.loc[bench, "n"]),
                     "parsed M0": round(a.loc[bench, "parse_rate"] * a.loc[bench, "n"]),
                     "parsed M_DART": round(b.loc[bench, "parse_rate"] * b.loc[bench, "n"]),
                     **_first_match_counts(a, b, bench),
                     "this run M0": _r3(acc0), "this run M_DART": _r3(acc1), "Δ": _r3(acc1 - acc0),
                     "benchmarks averaged": "",
                     "paper M0": None,
                     "paper M_DART": f"{exact:.3f}" if exact is not None else (f"≥ {at_least:.2f}" if at_least else None),
                     "paper Δ (pp)": paper.get("delta_pp", {}).get(bench)})
    df = pd.DataFrame(rows)
    for label, cat in (("D-Average", "descriptive"), ("N-Average", "normative")):
        part = df[df["type"] == cat]
        if len(part):
            df = pd.concat([df, pd.DataFrame([_average_row(label, part)])], ignore_index=True)
    notes = [f"Paper: {ref['source']} ({key}); '—' = not stated in the text.",
             ("Parsed-only accuracy: each model on its own parsed items (parsed M0 / parsed M_DART of n); a benchmark "
             "with no parsed item has no accuracy. D-/N-Average: unweighted means over the benchmarks with a value "
             "(Table 13's caption: unweighted arithmetic means); their Δ only when both models have every benchmark.")]
    return df, notes + ([fallback] if fallback else [])


# ---- Table 16 ---------------------------------------------------------------------------------------------------
def cohen_size(g: float) -> str:
    """Cohen's (1988) labels for g as App. J / Table 16 state them: > .05 small, > .15 medium, > .25 large."""
    if g is None or np.isnan(g):
        return ""
    return "large" if g > 0.25 else "medium" if g > 0.15 else "small" if g > 0.05 else "negligible"


def table16(preds: dict[str, pd.DataFrame], alpha: float = 0.05, comparisons: int = S.TABLE2_COMPARISONS
            ) -> tuple[pd.DataFrame, list[str]]:
    """Table 16: Cohen's g = |b − c| / n (App. J) with b, c, n, exact McNemar p, Bonferroni mark and size label for
    overall, DIFF, EQUAL, descriptive and normative accuracy, for M0 vs M_DART, M0 vs M_int and M_int vs M_DART."""
    paper = reported("table16")
    rows = []
    for first, second in COMPARISONS:
        for label, subset, parsed_only in TABLE16_METRICS:
            r = paired_mcnemar(preds[first], preds[second], subset=subset, parsed_only=parsed_only)
            paper_text = paper.get(TABLE16_PAPER_KEY.get(label, ""), None) if (first, second) == ("m0", "m_dart") else None
            rows.append({"comparison": f"{MODEL_LABELS[first]} → {MODEL_LABELS[second]}", "metric": label,
                         "n": r["n"], "b": r["b"], "c": r["c"], "Δ acc": _r3(r["delta"]), "g": _r3(r["g"]),
                         "size": cohen_size(r["g"]), "g (textbook)": _r3(r["g_textbook"]),
                         "p": None if np.isnan(r["p"]) else r["p"],
                         "mark": _mark(r["p"], alpha / comparisons), "paper": paper_text})
    notes = [f"Paper: {paper['source']}.",
             ("b = items the first model gets right and the second wrong, c = the reverse; g = |b − c| / n with n all paired "
             "items (App. J's definition, = |Δ acc|); g (textbook) = max(b, c)/(b + c) − 0.5 (Cohen 1988, never > .5)."),
             "Size labels on g: > .05 small, > .15 medium, > .25 large (App. J).",
             (f"Marks: exact McNemar, Bonferroni over {comparisons} comparisons as Table 2 (adjusted α "
             f"{alpha / comparisons:.4f}). Overall/DIFF/EQUAL: unparsed = wrong; descriptive/normative: items both "
             "models parsed (as Table 2's test).")]
    return pd.DataFrame(rows), notes


# ---- toxicity shift (§3.2) ----------------------------------------------------------------------------------------
def _median(x, axis=-1):
    return np.median(x, axis=axis)


def _rel_change(x, y, axis=-1):
    with np.errstate(divide="ignore", invalid="ignore"):
        return S.relative_median_change(x, y, axis=axis)


def toxicity_shift(x, y, n_resamples: int = S.N_RESAMPLES, seed: int = S.DEFAULT_SEED) -> dict:
    """Relative change of median toxicity from x to y (paired items) in %, its paired bootstrap 95 % CI, the paired
    permutation p (relative statistic) and the unpaired Mann–Whitney p (§3.3.1 names it for the same change).
    change is NaN when median(x) is 0 (a relative change is undefined)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    out = {"n": int(x.size), "median_before": float(np.median(x)), "median_after": float(np.median(y))}
    if out["median_before"] == 0:
        return out | {"change_pct": float("nan"), "ci_lo_pct": float("nan"), "ci_hi_pct": float("nan"),
                      "p_permutation": float("nan"), "p_mann_whitney": S.mann_whitney(x, y)["p"]}
    ci = S.paired_bootstrap_ci(_rel_change, x, y, n_resamples=n_resamples, seed=seed)
    perm = S.permutation_test_median_shift(x, y, n_resamples=n_resamples, seed=seed, paired=True, relative=True)
    return out | {"change_pct": 100 * ci["estimate"], "ci_lo_pct": 100 * ci["lo"], "ci_hi_pct": 100 * ci["hi"],
                  "p_permutation": perm["p"], "p_mann_whitney": S.mann_whitney(x, y)["p"]}


def _paper_shift(key: str) -> dict:
    p = reported("toxicity_shift").get(key)
    if p is None:
        return {"paper change %": None, "paper 95% CI %": None, "paper p": None}
    if "change_pct" in p:
        return {"paper change %": p["change_pct"], "paper 95% CI %": f"[{p['ci_pct'][0]}, {p['ci_pct'][1]}]",
                "paper p": p["p"]}
    lo, hi = p["ci_pct"]
    return {"paper change %": -p["decrease_pct"], "paper 95% CI %": f"[−{hi}, −{lo}] (stated: decrease {lo}–{hi})",
            "paper p": p["p"]}


def toxicity_shift_table(preds: dict[str, pd.DataFrame], n_resamples: int = S.N_RESAMPLES,
                         seed: int = S.DEFAULT_SEED) -> tuple[pd.DataFrame, list[str]]:
    """§3.2: median-toxicity change M0 → M_int, M_int → M_DART and M0 → M_DART with bootstrap CI and tests, beside
    the paper's +7.1 % [5.8, 8.4] and −13.7 % [11.9, 15.5]."""
    rows = []
    for first, second in (("m0", "m_int"), ("m_int", "m_dart"), ("m0", "m_dart")):
        a = preds[first].set_index("id")["toxicity"]
        b = preds[second].set_index("id")["toxicity"].loc[a.index]
        r = toxicity_shift(a.to_numpy(), b.to_numpy(), n_resamples=n_resamples, seed=seed)
        rows.append({"shift": f"{MODEL_LABELS[first]} → {MODEL_LABELS[second]}", "n": r["n"],
                     "median before": r["median_before"], "median after": r["median_after"],
                     "change %": r["change_pct"], "95% CI lo %": r["ci_lo_pct"], "95% CI hi %": r["ci_hi_pct"],
                     "p (paired permutation)": r["p_permutation"], "p (Mann–Whitney)": r["p_mann_whitney"],
                     **_paper_shift(f"{first}_to_{second}")})
    notes = [f"Paper: {reported('toxicity_shift')['source']} (Llama-3-8B-Instruct, RoBERTa toxicity).",
             (f"change % = median(after)/median(before) − 1 of the rationales' toxicity; 95 % CI: paired percentile "
             f"bootstrap over test items ({n_resamples} resamples, seed {seed}); p (paired permutation): swaps each item's "
             f"two scores ({n_resamples} resamples; it cannot fall below 1/(resamples + 1), so the paper's p < 1e-12 cannot "
             "come from such a test); p (Mann–Whitney): unpaired U as §3.3.1 names it."),
             "A change is undefined (empty) when the median before is 0."]
    return pd.DataFrame(rows), notes


def table44(preds: dict[str, pd.DataFrame], n_resamples: int = S.N_RESAMPLES,
            seed: int = S.DEFAULT_SEED) -> tuple[pd.DataFrame, list[str]]:
    """App. Q, Table 44: median rationale toxicity of M0, M_int and M_DART by task type (descriptive D1–D4,
    normative N1–N4), with the drift (M0 → M_int) and the net change (M0 → M_DART) per type, as in ``toxicity_shift``.
    The paper text we have prints only the table's caption ("harm drift occurs in both task types; repair reduces
    toxicity below baseline"), not its values, so no paper column."""
    rows = []
    for cat in ("descriptive", "normative"):
        ids = preds["m0"].loc[preds["m0"]["category"] == cat, "id"]
        tox = {m: preds[m].set_index("id")["toxicity"].loc[ids].to_numpy(float) for m in ("m0", "m_int", "m_dart")}
        if len(ids) == 0:                   # no test item of this type (tiny configurations)
            rows.append({"task type": cat, "n": 0})
            continue
        drift = toxicity_shift(tox["m0"], tox["m_int"], n_resamples=n_resamples, seed=seed)
        net = toxicity_shift(tox["m0"], tox["m_dart"], n_resamples=n_resamples, seed=seed)
        rows.append({"task type": cat, "n": len(ids),
                     **{f"median {MODEL_LABELS[m]}": float(np.median(v)) for m, v in tox.items()},
                     "M0 → M_int %": drift.get("change_pct"), "p (M0 → M_int)": drift.get("p_permutation"),
                     "M0 → M_DART %": net.get("change_pct"), "p (M0 → M_DART)": net.get("p_permutation")})
    notes = ["Paper: App. Q, Table 44 (Llama-3-8B-Instruct, RoBERTa toxicity); the paper text we have prints only its "
             "caption: harm drift in both task types, slightly larger in descriptive tasks, and repair below baseline.",
             f"Test items by the benchmark's category. change % = median(after)/median(before) − 1; p: paired "
             f"permutation of the relative median shift ({n_resamples} resamples, seed {seed}), as in "
             "`toxicity_shift`; empty where the median before is 0."]
    return pd.DataFrame(rows), notes


# ---- Figure 3 data ----------------------------------------------------------------------------------------------
def figure3_data(preds: dict[str, pd.DataFrame], student: str, n_resamples: int = S.N_RESAMPLES,
                 seed: int = S.DEFAULT_SEED) -> pd.DataFrame:
    """Figure 3's numbers: accuracy (overall, EQUAL, DIFF; unparsed = wrong) and median toxicity of M0, M_int,
    M_DART with bootstrap 95 % CIs over test items, and the paper's value where stated (long format)."""
    key, _ = paper_student(student, reported("figure3"))
    paper = reported("figure3")[key]
    rows = []
    for m in MODELS:
        df = preds[m]
        for metric, subset in (("acc_overall", None), ("acc_equal", ("condition", "EQUAL")),
                               ("acc_diff", ("condition", "DIFF"))):
            ci = S.accuracy_ci(S.correctness(_subset(df, subset)), n_resamples=n_resamples, seed=seed)
            rows.append({"model": MODEL_LABELS[m], "metric": metric, "estimate": ci["estimate"], "ci_lo": ci["lo"],
                         "ci_hi": ci["hi"], "n": ci["n"], "paper": paper[metric].get(m)})
        ci = S.paired_bootstrap_ci(_median, df["toxicity"].to_numpy(float), n_resamples=n_resamples, seed=seed)
        rows.append({"model": MODEL_LABELS[m], "metric": "median_toxicity", "estimate": ci["estimate"],
                     "ci_lo": ci["lo"], "ci_hi": ci["hi"], "n": ci["n"], "paper": paper["median_toxicity"].get(m)})
    return pd.DataFrame(rows)


# ---- Table 4 ----------------------------------------------------------------------------------------------------
def table4_mark(kind: str, delta: float, p: float, rule, alpha: float = 0.05) -> str:
    """Table 4 mark from a measured change (docs/statistics.md). kind "acc" (Acc, EQUAL, Parse%; delta in pp,
    p = exact McNemar): ✓✓ significant gain ≥ acc_large_pp, ✓ significant gain ≥ acc_small_pp, ✗ significant loss
    ≥ acc_small_pp, ∼ otherwise. kind "tox" (delta = relative change of median toxicity in %, p = paired
    permutation): ✓✓ significant fall ≥ tox_large_pct, ✓ significant fall ≥ tox_small_pct, ✗ significant rise
    ≥ tox_small_pct, ∼ otherwise. Significant: p < alpha (unadjusted). NaN delta or p: "n/a"."""
    if delta is None or p is None or np.isnan(delta) or np.isnan(p):
        return NO_TEST
    sig = p < alpha
    if kind == "acc":
        gain, small, large = delta, rule.acc_small_pp, rule.acc_large_pp
    elif kind == "tox":
        gain, small, large = -delta, rule.tox_small_pct, rule.tox_large_pct
    else:
        raise ValueError(f"table4_mark: unknown kind {kind!r}")
    if sig and gain >= large:
        return DOUBLE
    if sig and gain >= small:
        return CHECK
    if sig and gain <= -small:
        return CROSS
    return TILDE


def component_effect(before: pd.DataFrame, after: pd.DataFrame, rule, alpha: float = 0.05,
                     n_resamples: int = S.N_RESAMPLES, seed: int = S.DEFAULT_SEED) -> dict[str, dict]:
    """Measured change of one component (after vs before on the same items) for Table 4's four columns: accuracy and
    EQUAL accuracy (unparsed = wrong) and parse rate in pp with exact McNemar p; median toxicity in % with the paired
    permutation p; each with its mark (`table4_mark`)."""
    out = {}
    for metric, subset, on in (("acc", None, "correct"), ("equal", ("condition", "EQUAL"), "correct"),
                               ("parse", None, "parsed")):
        r = paired_mcnemar(before, after, subset=subset, on=on)
        delta = 100 * r["delta"]
        out[metric] = {"delta": delta, "unit": "pp", "p": r["p"], "n": r["n"],
                       "mark": table4_mark("acc", delta, r["p"], rule, alpha)}
    a = before.set_index("id")["toxicity"]
    b = after.set_index("id")["toxicity"].loc[a.index]
    t = toxicity_shift(a.to_numpy(), b.to_numpy(), n_resamples=n_resamples, seed=seed)
    out["tox"] = {"delta": t["change_pct"], "unit": "%", "p": t["p_permutation"], "n": t["n"],
                  "mark": table4_mark("tox", t["change_pct"], t["p_permutation"], rule, alpha)}
    return out


def _fmt_delta(e: dict) -> str:
    d = e["delta"]
    if d is None or np.isnan(d):
        return "undefined"
    return f"{d:+.1f} {e['unit']}"


AMBIGUOUS = "✓ or ✓✓ †"                      # Full DART + Policy: 7 check marks over 4 columns in the text


def _paper_mark(row: dict | None, metric: str) -> str:
    if row is None:
        return "—"
    if row.get("marks"):
        return row["marks"][metric]
    return AMBIGUOUS


def table4(effects: dict[str, dict | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 4: one row per component, per column our mark with the measured Δ and the paper's mark (wide), and a
    long detail table with n, Δ, p and the paper's stated Δ. effects: component key -> `component_effect` result,
    or None when not run (the notebook says why)."""
    paper_rows = reported("table4")["rows"]
    wide, long = [], []
    for key, label, comparison, _, _ in TABLE4_COMPONENTS:
        eff, prow = effects.get(key), paper_rows.get(key)
        row = {"component": label, "this run: comparison": comparison if eff else NOT_RUN}
        for metric, col in TABLE4_METRICS:
            e = (eff or {}).get(metric)
            row[f"{col} (this run)"] = f"{e['mark']} ({_fmt_delta(e)})" if e else NOT_RUN
            row[f"{col} (paper)"] = _paper_mark(prow, metric)
            long.append({"component": label, "column": col, "this run mark": e["mark"] if e else NOT_RUN,
                         "Δ": None if not e or np.isnan(e["delta"]) else round(e["delta"], 2),
                         "unit": e["unit"] if e else None, "n": e["n"] if e else None,
                         "p": None if not e or np.isnan(e["p"]) else e["p"],
                         "paper mark": _paper_mark(prow, metric),
                         "paper stated Δ": ((prow or {}).get("stated") or {}).get(metric)})
        wide.append(row)
    return pd.DataFrame(wide), pd.DataFrame(long).astype({"n": "Int64"})


def table4_notes(rule, alpha: float) -> list[str]:
    """The rule and the caveats printed under Table 4."""
    ref = reported("table4")
    fd = ref["rows"]["full_dart_policy"]
    notes = [(f"Paper: {ref['source']}; Llama-3-8B-Instruct. † Full DART + Policy reads "
              f"'{fd['raw']}' in the text: {fd['note']}."),
             (f"Rule (ours, docs/statistics.md): Acc, EQUAL (unparsed = wrong) and Parse% — Δ in pp with exact McNemar p: "
             f"✓✓ significant gain ≥ {rule.acc_large_pp} pp, ✓ significant gain ≥ {rule.acc_small_pp} pp, ✗ significant "
             f"loss ≥ {rule.acc_small_pp} pp, else ∼. Tox.↓ — relative change of median rationale toxicity with the paired "
             f"permutation p: ✓✓ significant fall ≥ {rule.tox_large_pct} %, ✓ significant fall ≥ {rule.tox_small_pct} %, "
             f"✗ significant rise ≥ {rule.tox_small_pct} %, else ∼. Significant: p < {alpha}, unadjusted (p-values in "
             "the detail table)."),
             ("Label-only SFT and Toxicity-reg. SFT (App. K.2) are notebook 06's arms against M0, trained on Stage I's "
              "items with Stage I's hyperparameters; 'not run' where `baselines` switches an arm off.")]
    return notes
