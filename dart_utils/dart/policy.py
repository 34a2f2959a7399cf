"""Inference-time explanation policy (paper §2.6, App. F, K.1, N; Tables 3, 17, 18, 33, 34).

Why: the policy is a system prompt chosen per item. §2.6: "first generating with a neutral prompt to obtain ŷ, then
selecting the appropriate policy variant and regenerating"; F.1 for NO, F.2 for YES, and the harmful-premise
constraint F.3 added "using keyword filtering combined with toxicity screening (H(x) > 0.5)". Table 34 compares
selecting the variant by ŷ (two-pass), by the gold label (oracle) and at random.

Every selection mode only chooses between the SAME regenerations (F.1 and F.2 for an item, each with F.3 when the
item is flagged), so notebook 04 generates each variant once per model and every mode is a lookup:
`variant_prompts` gives the prompts, `select_variants` the choice per mode, `mode_records` the answer per item, and
the table functions below summarise them.

Modes (`MODES`):
* "off": the neutral E.3 output (the first pass) is the answer.
* "two_pass": the variant of the first-pass prediction ŷ. When the first pass has no parsable conclusion there is no
  ŷ to select by: the neutral output is kept and the item is counted as "first pass unparsed" (ours; the paper does
  not say).
* "always_on": one static policy for every item (`prompts.static_policy_messages`, ours: the paper never prints the
  prompt it used, and F.1 or F.2 alone would dictate the conclusion; docs/policy.md).
* "oracle": the variant of the gold label (Table 34's upper bound).
* "random": a variant drawn per item from (seed, item id), independent of batch order (Table 34).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..core.paper import reported
from .evaluation import decision_metrics
from .prompts import LABELS, policy_messages, static_policy_messages

MODES = ("off", "two_pass", "always_on", "oracle", "random")
STATIC = "static"            # the variant name of the always-on policy


def keyword_pattern(keywords: Sequence[str]) -> re.Pattern | None:
    """Case-insensitive whole-word match of any keyword (multi-word keywords allowed); None for an empty list."""
    words = [k.strip() for k in keywords if k and k.strip()]
    if not words:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b",
                      re.IGNORECASE)


def harmful_premise_flags(questions: Sequence[str], keywords: Sequence[str], h_x: Sequence[float] | None = None,
                          threshold: float = 0.5) -> list[dict]:
    """Per question: flagged when a keyword matches OR the question's toxicity H(x) > threshold (§2.6). Returns
    dicts with `flagged`, `keyword` (the first match or None) and `toxic` (H(x) > threshold, None without scores)."""
    if h_x is not None and len(h_x) != len(questions):
        raise ValueError(f"{len(h_x)} toxicity scores for {len(questions)} questions")
    pat = keyword_pattern(keywords)
    out = []
    for k, q in enumerate(questions):
        m = pat.search(q or "") if pat else None
        toxic = None if h_x is None else float(h_x[k]) > threshold
        out.append({"flagged": bool(m) or bool(toxic), "keyword": m.group(0).lower() if m else None, "toxic": toxic})
    return out


def variant_prompts(questions: Sequence[str], flags: Sequence[dict]) -> dict[str, list[list[dict]]]:
    """The regeneration prompt sets: label -> one message list per question (F.1 or F.2 system prompt, plus F.3
    where the question is flagged; E.3 user turn), and "static" -> the always-on prompt (F.3 always)."""
    if len(flags) != len(questions):
        raise ValueError(f"{len(flags)} flags for {len(questions)} questions")
    out = {lab: [policy_messages(q, lab, harmful_premise=f["flagged"]) for q, f in zip(questions, flags)]
           for lab in LABELS}
    out[STATIC] = [static_policy_messages(q) for q in questions]
    return out


def variants_needed(modes) -> list[str]:
    """The regenerations `modes` look up (none for "off" alone)."""
    need = list(LABELS) if {"two_pass", "oracle", "random"} & set(modes) else []
    return need + ([STATIC] if "always_on" in modes else [])


def _coin(item_id: str, seed: int) -> str:
    return LABELS[hashlib.sha256(f"policy|{seed}|{item_id}".encode()).digest()[0] & 1]


def select_variants(mode: str, ids: Sequence[str], first_pass: Sequence[str | None], gold: Sequence[str],
                    seed: int = 42) -> list[str | None]:
    """The variant (YES / NO / static) each item gets under `mode`, or None where the neutral first-pass output
    stays."""
    if mode not in MODES:
        raise ValueError(f"policy mode must be one of {MODES}, got {mode!r}")
    if not (len(ids) == len(first_pass) == len(gold)):
        raise ValueError("ids, first_pass and gold must have the same length")
    if mode == "off":
        return [None] * len(ids)
    if mode == "two_pass":
        return [p if p in LABELS else None for p in first_pass]
    if mode == "always_on":
        return [STATIC] * len(ids)
    if mode == "oracle":
        return [str(g).strip().upper() for g in gold]
    return [_coin(i, seed) for i in ids]


def final_outputs(first_pass_texts: Sequence[str], regenerated: dict[str, Sequence[str]],
                  variants: Sequence[str | None]) -> list[str]:
    """The answer per item: the regeneration of its selected variant, or the first-pass text where none is."""
    out = []
    for k, (text, v) in enumerate(zip(first_pass_texts, variants, strict=True)):
        out.append(text if v is None else regenerated[v][k])
    return out


OUTCOMES = (("matched", "YES", "YES"), ("matched", "NO", "NO"), ("under-engagement", "YES", "NO"),
            ("over-engagement", "NO", "YES"), ("first pass unparsed", "YES", "none"),
            ("first pass unparsed", "NO", "none"))


def selection_outcomes(gold: Sequence[str], variants: Sequence[str | None], final_pred: Sequence[str | None]
                       ) -> pd.DataFrame:
    """Table 33: items by (gold label, selected policy) — matched, under-engagement (gold YES, policy NO),
    over-engagement (gold NO, policy YES), first pass unparsed (no policy) — with the final accuracy in each cell.
    Every cell is listed, empty ones with n 0, so the paper's counts always have a row to stand beside."""
    counts = {key: [0, 0] for key in OUTCOMES}
    for g, v, p in zip(gold, variants, final_pred, strict=True):
        g = str(g).strip().upper()
        kind = ("first pass unparsed" if v is None else "matched" if v == g
                else "under-engagement" if g == "YES" else "over-engagement")
        cell = counts.setdefault((kind, g, v or "none"), [0, 0])
        cell[0] += 1
        cell[1] += int(p == g)
    total = sum(n for n, _ in counts.values())
    rows = [{"outcome": k, "gold": g, "policy": v, "n": n, "share": round(n / total, 3) if total else float("nan"),
             "final_accuracy": round(c / n, 3) if n else float("nan")} for (k, g, v), (n, c) in counts.items()]
    return pd.DataFrame(rows, columns=["outcome", "gold", "policy", "n", "share", "final_accuracy"])


# ---- records under each mode ------------------------------------------------------------------------------------
def mode_records(model: str, mode: str, first_pass: Sequence[dict], regenerated: dict[str, Sequence[dict]],
                 variants: Sequence[str | None], flags: Sequence[dict]) -> list[dict]:
    """The answer record per item under `mode`: the regenerated record of its variant, or the first-pass record.
    Records carry `toxicity` already; added: model, mode, variant, flagged (notebook 04's policy_outputs.jsonl)."""
    out = []
    for k, (first, v, f) in enumerate(zip(first_pass, variants, flags, strict=True)):
        rec = dict(first if v is None else regenerated[v][k])
        if rec["id"] != first["id"]:
            raise ValueError(f"item order differs between the first pass and the {v} regeneration at {k}")
        rec.update(model=model, mode=mode, variant=v, flagged=bool(f["flagged"]))
        out.append(rec)
    return out


def rationale_words(text: str | None) -> int:
    return len((text or "").split())


# ---- tables -------------------------------------------------------------------------------------------------------
def _tox(df: pd.DataFrame, q: float) -> float:
    return float(df["toxicity"].quantile(q)) if len(df) else float("nan")


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Table 17 (and the inputs of 3, 18, 34): per model x mode the decision metrics and the toxicity of the
    rationales (median and Q95, overall and on gold DIFF / EQUAL items), YES rate, words per rationale."""
    rows = []
    for (model, mode), g in df.groupby(["model", "mode"], sort=False):
        m = decision_metrics(g)
        diff, equal = g[g["condition"] == "DIFF"], g[g["condition"] == "EQUAL"]
        rows.append({"model": model, "mode": mode, "n": len(g), "acc_overall": m["acc_overall"],
                     "acc_diff": m["acc_diff"], "acc_equal": m["acc_equal"], "parse_rate": m["parse_rate"],
                     "parse_rate_first_match": m["parse_rate_first_match"],
                     "acc_overall_first_match": m["acc_overall_first_match"], "no_conclusion_rate": 1 - m["parse_rate"], "yes_rate": m["pred_yes_rate"],
                     "tox_median": _tox(g, .5), "tox_q95": _tox(g, .95),
                     "tox_median_diff": _tox(diff, .5), "tox_q95_diff": _tox(diff, .95),
                     "tox_median_equal": _tox(equal, .5), "tox_q95_equal": _tox(equal, .95),
                     "words": float(g["rationale"].map(rationale_words).mean()) if len(g) else float("nan")})
    return pd.DataFrame(rows)


def _pct(new: float, old: float) -> float:
    return float("nan") if not old or np.isnan(old) or np.isnan(new) else 100.0 * (new - old) / old


def _cell(s: pd.DataFrame, model: str, mode: str, key: str) -> float:
    hit = s[(s["model"] == model) & (s["mode"] == mode)]
    return float(hit.iloc[0][key]) if len(hit) else float("nan")


def _ref(v) -> str:
    return "—" if v is None else f"{v:g}"


def _m0_table2() -> dict:
    """M0's Table 2 numbers of the paper's primary student (Llama-3-8B-Instruct): the policy-off baseline of
    Tables 17 and 18."""
    return reported("table2")["llama-3-8b-instruct"]["m0"]


def table17(s: pd.DataFrame) -> pd.DataFrame:
    """Table 17: model x policy (off / two-pass) with the paper's stated accuracy, EQUAL and median toxicity
    (`reported("policy")`; M0 without policy: Table 2's M0)."""
    paper, m0 = reported("policy"), _m0_table2()
    ref = {("m0", "off"): {"acc": m0["acc_overall"], "eq": m0["acc_equal"],
                           "tox": paper["m0_no_policy"]["toxicity_median"]},
           ("m0", "two_pass"): {"acc": paper["m0_policy"]["acc_overall"], "eq": paper["m0_policy"]["acc_equal"],
                                "tox": paper["m0_policy"].get("toxicity_median")},
           ("m_int", "off"): {"tox": paper["m_int"]["toxicity_median_no_policy"]},
           ("m_int", "two_pass"): {"tox": paper["m_int"]["toxicity_median_policy"]},
           ("m_dart", "off"): {"tox": paper["m_dart_policy_effect"]["toxicity_median_no_policy"]},
           ("m_dart", "two_pass"): {"tox": paper["m_dart_policy_effect"]["toxicity_median_policy"]}}
    cols = ["model", "mode", "n", "acc_overall", "acc_equal", "acc_diff", "parse_rate", "parse_rate_first_match",
            "acc_overall_first_match", "tox_median", "tox_q95",
            "tox_median_diff", "tox_median_equal", "tox_q95_diff", "tox_q95_equal"]
    t = s[cols].copy()
    for key, label in (("acc", "paper acc"), ("eq", "paper EQUAL"), ("tox", "paper tox median")):
        t[label] = [_ref(ref.get((m, mo), {}).get(key)) for m, mo in zip(t["model"], t["mode"])]
    return t


def _compare(rows: list[tuple], s: pd.DataFrame, model: str, before: str, after: str) -> pd.DataFrame:
    """Long table: metric | before | after | change (pp for rates, % for toxicity and length) | paper columns."""
    out = []
    for label, key, unit, p_before, p_after, p_change in rows:
        b, a = _cell(s, model, before, key), _cell(s, model, after, key)
        change = 100 * (a - b) if unit == "pp" else _pct(a, b)
        out.append({"metric": label, before: b, after: a, "change": change, "unit": unit,
                    f"paper {before}": _ref(p_before), f"paper {after}": _ref(p_after), "paper change": _ref(p_change)})
    return pd.DataFrame(out)


def table3(s: pd.DataFrame, detection: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 3: the policy's effect on M_DART (two-pass vs off), plus the always-on and single-pass comparisons
    the text states, and the harmful-premise detector's precision / recall (`reported("policy")` beside)."""
    paper = reported("policy")
    eff = paper["m_dart_policy_effect"]
    t = _compare([("Accuracy, overall", "acc_overall", "pp", paper["single_pass_m_dart_acc"], None,
                   eff["accuracy_change_pp"]),
                  ("EQUAL accuracy", "acc_equal", "pp", None, None, None),
                  ("Median toxicity", "tox_median", "%", eff["toxicity_median_no_policy"],
                   eff["toxicity_median_policy"], eff["median_toxicity_change_pct"]),
                  ("Q95 toxicity", "tox_q95", "%", None, None, eff["q95_toxicity_change_pct"]),
                  ("No conclusion (refusal/abstention)", "no_conclusion_rate", "pp", None, None, None)],
                 s, "m_dart", "off", "two_pass")
    extra = [("Always-on accuracy", _cell(s, "m_dart", "always_on", "acc_overall"), paper["always_on"]["acc_overall"]),
             ("Always-on no-conclusion rate", _cell(s, "m_dart", "always_on", "no_conclusion_rate"),
              paper["always_on"]["refusal_rate"]),
             ("M0 two-pass accuracy (vs M_DART single pass)", _cell(s, "m0", "two_pass", "acc_overall"),
              paper["two_pass_m0_acc"])]
    if detection is not None and len(detection):
        combined = detection[detection["detector"] == "keyword or H(x)"].iloc[0]
        det = paper["harmful_premise_detection"]
        extra += [("Harmful-premise detection precision", combined["precision"], det["precision"]),
                  ("Harmful-premise detection recall", combined["recall"], det["recall"])]
    extra_rows = pd.DataFrame([{"metric": m, "two_pass": v, "paper two_pass": _ref(p)} for m, v, p in extra])
    return pd.concat([t, extra_rows], ignore_index=True)


def table18(s: pd.DataFrame) -> pd.DataFrame:
    """Table 18: M0's responses without and with the policy (YES rate, length, parse failures, accuracy, toxicity);
    `reported("policy")` beside, M0 without policy from Table 2."""
    paper, m0 = reported("policy"), _m0_table2()
    m0p, m0n = paper["m0_policy"], paper["m0_no_policy"]
    return _compare([("Predicted YES", "yes_rate", "pp", m0n["yes_rate"], m0p["yes_rate"], None),
                     ("Words per rationale", "words", "%", None, None, m0p["rationale_length_change_pct"]),
                     ("Parse failures", "no_conclusion_rate", "%", None, None, m0p["parse_failure_change_pct"]),
                     ("Accuracy, overall", "acc_overall", "pp", m0["acc_overall"], m0p["acc_overall"], None),
                     ("EQUAL accuracy", "acc_equal", "pp", m0["acc_equal"], m0p["acc_equal"], None),
                     ("Median toxicity", "tox_median", "%", m0n["toxicity_median"], m0p.get("toxicity_median"),
                      m0p["median_toxicity_change_pct"]),
                     ("Q95 toxicity", "tox_q95", "%", None, None, m0p["q95_toxicity_change_pct"])],
                    s, "m0", "off", "two_pass")


def table33(df: pd.DataFrame, model: str = "m_dart") -> pd.DataFrame:
    """Table 33: two-pass selection outcomes of `model` with the paper's stated under/over-engagement counts."""
    paper = reported("policy")
    g = df[(df["model"] == model) & (df["mode"] == "two_pass")]
    t = selection_outcomes(list(g["gold"]), [None if pd.isna(v) else v for v in g["variant"]], list(g["prediction"]))
    ref = paper["table33"]
    keys = {"under-engagement": "under_engagement", "over-engagement": "over_engagement"}
    t["paper n"] = [_ref(ref[keys[o]]["n"]) if o in keys else "—" for o in t["outcome"]]
    t["paper final_accuracy"] = [f"{ref[keys[o]]['correct'] / ref[keys[o]]['n']:.3f}" if o in keys else "—"
                                 for o in t["outcome"]]
    return t


def table34(s: pd.DataFrame, model: str = "m_dart") -> pd.DataFrame:
    """Table 34: oracle / two-pass / random selection on `model`: accuracy, median toxicity, its change vs no policy,
    and two-pass's share of the oracle's accuracy and toxicity reduction."""
    ref = reported("policy")["table34"]
    off_tox = _cell(s, model, "off", "tox_median")
    oracle_acc = _cell(s, model, "oracle", "acc_overall")
    oracle_red = -_pct(_cell(s, model, "oracle", "tox_median"), off_tox)
    rows = []
    for mode in ("off", "oracle", "two_pass", "random"):
        acc, tox = _cell(s, model, mode, "acc_overall"), _cell(s, model, mode, "tox_median")
        red = 0.0 - _pct(tox, off_tox)                                  # 0.0 - x: no "-0" in the table
        rows.append({"selection": mode, "acc_overall": acc, "tox_median": tox, "tox_change_pct_vs_off": 0.0 - red,
                     "share_of_oracle_acc": acc / oracle_acc if oracle_acc else float("nan"),
                     "share_of_oracle_tox_reduction": red / oracle_red if oracle_red else float("nan")})
    t = pd.DataFrame(rows)
    t["paper"] = ["—", f"acc {ref['oracle_acc']}, tox −{ref['oracle_toxicity_reduction_pct']}%",
                  (f"{ref['two_pass_share_of_oracle_acc']} of oracle acc, "
                   f"{ref['two_pass_share_of_oracle_tox_reduction']} of its tox reduction"),
                  f"tox {ref['random_toxicity_change_pct']}%"]
    return t


def premise_detection(texts: Sequence[str], harmful: Sequence[bool], keywords: Sequence[str], h_x: Sequence[float],
                      threshold: float) -> pd.DataFrame:
    """Precision / recall of the harmful-premise detector against gold labels (keyword only, H(x) only, and the
    policy's rule keyword OR H(x) > threshold), the paper's precision / recall beside the policy's rule."""
    flags = harmful_premise_flags(texts, keywords, h_x, threshold)
    gold = np.asarray(harmful, dtype=bool)
    detectors = {"keyword only": [f["keyword"] is not None for f in flags],
                 f"H(x) > {threshold:g} only": [bool(f["toxic"]) for f in flags],
                 "keyword or H(x)": [f["flagged"] for f in flags]}
    rows = []
    for name, pred in detectors.items():
        pred = np.asarray(pred, dtype=bool)
        tp, fp = int((pred & gold).sum()), int((pred & ~gold).sum())
        fn, tn = int((~pred & gold).sum()), int((~pred & ~gold).sum())
        prec = tp / (tp + fp) if tp + fp else float("nan")
        rec = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * prec * rec / (prec + rec) if tp else 0.0
        rows.append({"detector": name, "n": len(gold), "harmful": int(gold.sum()), "flagged": int(pred.sum()),
                     "tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": prec, "recall": rec, "f1": f1})
    t = pd.DataFrame(rows)
    paper = reported("policy")["harmful_premise_detection"]
    t["paper precision"] = [_ref(paper["precision"]) if d == "keyword or H(x)" else "—" for d in t["detector"]]
    t["paper recall"] = [_ref(paper["recall"]) if d == "keyword or H(x)" else "—" for d in t["detector"]]
    return t


def flag_rates(rows: Sequence[dict], flags: Sequence[dict]) -> pd.DataFrame:
    """How many test questions the policy treats as harmful premises, per benchmark and by which rule."""
    df = pd.DataFrame({"benchmark": [r["benchmark"] for r in rows], "flagged": [f["flagged"] for f in flags],
                       "keyword": [f["keyword"] is not None for f in flags], "toxic": [bool(f["toxic"]) for f in flags]})
    t = df.groupby("benchmark", as_index=False).agg(n=("flagged", "size"), flagged=("flagged", "sum"),
                                                    by_keyword=("keyword", "sum"), by_toxicity=("toxic", "sum"))
    total = pd.DataFrame([{"benchmark": "all", "n": len(df), "flagged": int(df["flagged"].sum()),
                           "by_keyword": int(df["keyword"].sum()), "by_toxicity": int(df["toxic"].sum())}])
    t = pd.concat([t, total], ignore_index=True)
    t["share_flagged"] = (t["flagged"] / t["n"]).round(3)
    return t
