"""Decision-quality metrics (paper §3.1 "Evaluation Metrics", Table 2, Table 13).

Why: the paper mixes two conventions, and a reader must know which one a number uses. Table 2's Overall, DIFF and
EQUAL accuracies count a parse failure as an incorrect prediction; its D1–D4 / N1–N4 rows and Table 13 are
parsed-only. Both are computed here from one predictions table (columns: id, benchmark, category, condition,
gold, prediction (YES/NO/None), parsed).

`predictions` is how every stage gets a model's answers: the prompts (App. E.3 by default) go through
`lm.generation.cached_generate` (raw outputs cached under a key that covers every input of the generation), and the
records are parsed anew from the raw texts each time, so they always reflect the current parser.

Two parse rules (`parsing.RULES`): `prediction` / `parsed` are the strict rule's, which every headline number uses;
`prediction_first_match` / `parsed_first_match` are the authors' rule, under which the paper counted its parse rates.
`decision_metrics` reports parse rate and the unparsed-=-wrong accuracies under both (`*_first_match` keys), so a
table can show our number and the one comparable with the paper side by side.
"""
from __future__ import annotations

import pandas as pd
from sklearn.metrics import f1_score

from .parsing import PARSER_VERSION, parse_first_match, parse_output
from .prompts import inference_messages

LABELS = ["YES", "NO"]


def _acc(df: pd.DataFrame) -> float:
    return float((df["prediction"] == df["gold"]).mean()) if len(df) else float("nan")


def _macro_f1(df: pd.DataFrame) -> float:
    """Macro-F1 over YES/NO; an unparsed prediction is a miss for its gold class and a false positive for none."""
    if not len(df):
        return float("nan")
    pred = df["prediction"].fillna("UNPARSED")
    return float(f1_score(df["gold"], pred, labels=LABELS, average="macro", zero_division=0))


FIRST_MATCH_KEYS = ("acc_overall", "acc_diff", "acc_equal", "parse_rate")   # also reported under the authors' rule


def under_rule(df: pd.DataFrame, rule: str) -> pd.DataFrame:
    """The frame with `prediction` / `parsed` of parse rule `rule` ("strict": unchanged; "first_match": from the
    `*_first_match` columns, or parsed from `raw_text` where a frame predates them)."""
    if rule == "strict":
        return df
    if rule != "first_match":
        raise ValueError(f"parse rule must be 'strict' or 'first_match', got {rule!r}")
    if "prediction_first_match" in df.columns:
        return df.assign(prediction=df["prediction_first_match"], parsed=df["parsed_first_match"].astype(bool))
    if "raw_text" not in df.columns:
        raise KeyError("a predictions frame needs prediction_first_match/parsed_first_match or raw_text for the "
                       "first_match rule")
    p = [parse_first_match(t) for t in df["raw_text"]]
    return df.assign(prediction=[x.conclusion for x in p], parsed=[x.parsed for x in p])


def decision_metrics(df: pd.DataFrame) -> dict[str, float]:
    """The Table 2 metrics for one model's predictions on one split (strict rule), plus parse rate and the
    unparsed-=-wrong accuracies under the authors' first-match rule (`<key>_first_match`; NaN when the frame has
    neither the first-match columns nor the raw text)."""
    out = _metrics(df)
    try:
        fm = _metrics(under_rule(df, "first_match"))
    except KeyError:
        fm = dict.fromkeys(FIRST_MATCH_KEYS, float("nan"))
    return out | {f"{k}_first_match": fm[k] for k in FIRST_MATCH_KEYS}


def _metrics(df: pd.DataFrame) -> dict[str, float]:
    parsed = df[df["parsed"]]
    desc, norm = parsed[parsed.category == "descriptive"], parsed[parsed.category == "normative"]
    return {
        "n": int(len(df)),
        "acc_overall": _acc(df),                      # failures count as incorrect
        "f1_overall": _macro_f1(df),
        "acc_diff": _acc(df[df.condition == "DIFF"]),
        "acc_equal": _acc(df[df.condition == "EQUAL"]),
        "acc_descriptive": _acc(desc),                # parsed-only, as Table 2's D1–D4 row
        "acc_normative": _acc(norm),
        "f1_descriptive": _macro_f1(desc),
        "f1_normative": _macro_f1(norm),
        "parse_rate": float(df["parsed"].mean()) if len(df) else float("nan"),
        "acc_parsed_only": _acc(parsed),
        "pred_yes_rate": float((df["prediction"] == "YES").mean()) if len(df) else float("nan"),
    }


def per_benchmark(df: pd.DataFrame) -> pd.DataFrame:
    """Table 13 style: parsed-only accuracy, n and parse rate per benchmark (parse rate also under the first-match
    rule where the frame allows it)."""
    rows = []
    for bench, g in df.groupby("benchmark"):
        p = g[g["parsed"]]
        try:
            fm = float(under_rule(g, "first_match")["parsed"].mean())
        except KeyError:
            fm = float("nan")
        rows.append({"benchmark": bench, "n": len(g), "parse_rate": g["parsed"].mean(), "parse_rate_first_match": fm,
                     "acc_parsed_only": _acc(p),
                     "acc_diff": _acc(g[g.condition == "DIFF"]), "acc_equal": _acc(g[g.condition == "EQUAL"])})
    return pd.DataFrame(rows)


METRIC_LABELS = {
    "acc_overall": "Accuracy, overall (unparsed = wrong)",
    "f1_overall": "Macro-F1, overall",
    "acc_diff": "DIFF accuracy",
    "acc_equal": "EQUAL accuracy",
    "acc_descriptive": "D1–D4 accuracy (parsed only)",
    "acc_normative": "N1–N4 accuracy (parsed only)",
    "f1_descriptive": "D1–D4 macro-F1 (parsed only)",
    "f1_normative": "N1–N4 macro-F1 (parsed only)",
    "parse_rate": "Parse rate",
    "pred_yes_rate": "Share predicted YES",
    "parse_rate_first_match": "Parse rate [first-match rule, as the paper]",
    "acc_overall_first_match": "Accuracy, overall [first-match rule]",
    "acc_equal_first_match": "EQUAL accuracy [first-match rule]",
    "acc_diff_first_match": "DIFF accuracy [first-match rule]",
}


def compare_models(metrics: dict[str, dict[str, float]], paper: dict[str, dict[str, float]] | None,
                   paper_label: str) -> pd.DataFrame:
    """One row per metric: each model's value, then the paper's reported value for the same model where stated (the
    paper's value stands beside both parse rules' rows: it was counted under the first-match rule)."""
    rows = []
    for key, label in METRIC_LABELS.items():
        row = {"metric": label}
        for model, m in metrics.items():
            row[model] = round(m[key], 3)
        for model in metrics:
            ref = (paper or {}).get(model, {}).get(key.removesuffix("_first_match"))   # the paper's one value
            row[f"paper {model} ({paper_label})"] = "—" if ref is None else f"{ref:.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def to_predictions(rows, texts: list[str], new_tokens: list[int], model: str) -> list[dict]:
    """One prediction record per test item: the raw text, the parsed rationale and conclusion, and the flags."""
    out = []
    for r, text, n in zip(rows, texts, new_tokens, strict=True):
        p, f = parse_output(text), parse_first_match(text)
        out.append({"id": r["id"], "benchmark": r["benchmark"], "category": r["category"],
                    "condition": r["condition"], "gold": r["gold"], "model": model, "raw_text": text,
                    "rationale": p.rationale, "prediction": p.conclusion, "parsed": p.parsed,
                    "failure": p.failure, "prediction_first_match": f.conclusion, "parsed_first_match": f.parsed,
                    "new_tokens": n})
    return out


def predictions(model, tokenizer, rows, name: str, adapter: str | None, adapter_dir, gp, seed: int, cache_dir,
                system_role: bool = True, question_field: str = "question", make_records=None,
                messages: list[list[dict]] | None = None) -> tuple[list[dict], dict | str]:
    """Records of model `name` (adapter None = the base model M0; else the attached adapter `adapter`, whose files
    are `adapter_dir`) on `rows`: the E.3 prompt with rows[question_field] as the question, or `messages` (one message
    list per row, e.g. the App. F policy prompts). `make_records(rows, texts, new_token_counts, name)` builds the
    records (default `to_predictions`, which needs gold labels). Returns (records, stats): stats is "reused" when
    nothing was generated, else tokens/s, wall time and token count."""
    from ..lm.generation import cached_generate
    rows = list(rows)
    if messages is None:
        messages = [inference_messages(r[question_field]) for r in rows]
    elif len(messages) != len(rows):
        raise ValueError(f"{len(messages)} message lists for {len(rows)} rows")
    out = cached_generate(model, tokenizer, messages, gp, seed, cache_dir, adapter=adapter,
                          adapter_dir=adapter_dir if adapter else None, system_role=system_role, desc=name)
    records = (make_records or to_predictions)(rows, out.texts, out.new_token_counts, name)
    for r in records:
        r["parser_version"] = PARSER_VERSION
    stats = "reused" if out.reused else {"tokens_per_s": round(out.tokens_per_s, 1),
                                         "wall_time_s": round(out.wall_time_s, 1),
                                         "new_tokens": sum(out.new_token_counts)}
    return records, stats
