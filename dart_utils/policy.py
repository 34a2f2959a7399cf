"""Inference-time explanation policy (paper §2.6, App. F, App. N; Tables 3, 17, 18, 33, 34) — selection logic.

Why: the policy is a system prompt chosen per item. §2.6: "first generating with a neutral prompt to obtain ŷ, then
selecting the appropriate policy variant and regenerating"; F.1 for NO, F.2 for YES, and the harmful-premise
constraint F.3 added "using keyword filtering combined with toxicity screening (H(x) > 0.5)". Table 34 compares
selecting the variant by ŷ (two-pass), by the gold label (oracle) and at random.

Every selection mode only chooses between the SAME two regenerations (F.1 and F.2 for an item, each with F.3 when the
item is flagged), so a notebook generates both variants once per model and every mode is a lookup:
`variant_prompts` gives the prompts, `select_variants` the choice per mode, `final_outputs` the answer per item.

Modes (`MODES`):
* "off": the neutral E.3 output (the first pass) is the answer.
* "two_pass": the variant of the first-pass prediction ŷ. When the first pass has no parsable conclusion there is no
  ŷ to select by: the neutral output is kept and the item is counted as "first pass unparsed" (ours; the paper does
  not say).
* "oracle": the variant of the gold label (Table 34's upper bound).
* "random": a variant drawn per item from (seed, item id), independent of batch order (Table 34).
* "always_on" is NOT implemented here: the paper names it ("an always-on policy is overly restrictive", §3.3) without
  saying which static prompt it used; the decision is open (see docs when notebook 04 is written).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import pandas as pd

from .prompts import LABELS, policy_messages

MODES = ("off", "two_pass", "oracle", "random")


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
    """The two regeneration prompt sets: label -> one message list per question (F.1 or F.2 system prompt, plus F.3
    where the question is flagged; E.3 user turn)."""
    if len(flags) != len(questions):
        raise ValueError(f"{len(flags)} flags for {len(questions)} questions")
    return {lab: [policy_messages(q, lab, harmful_premise=f["flagged"]) for q, f in zip(questions, flags)]
            for lab in LABELS}


def _coin(item_id: str, seed: int) -> str:
    return LABELS[hashlib.sha256(f"policy|{seed}|{item_id}".encode()).digest()[0] & 1]


def select_variants(mode: str, ids: Sequence[str], first_pass: Sequence[str | None], gold: Sequence[str],
                    seed: int = 42) -> list[str | None]:
    """The variant (YES / NO) each item gets under `mode`, or None where the neutral first-pass output stays."""
    if mode not in MODES:
        raise ValueError(f"policy mode must be one of {MODES}, got {mode!r}")
    if not (len(ids) == len(first_pass) == len(gold)):
        raise ValueError("ids, first_pass and gold must have the same length")
    if mode == "off":
        return [None] * len(ids)
    if mode == "two_pass":
        return [p if p in LABELS else None for p in first_pass]
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


def selection_outcomes(gold: Sequence[str], variants: Sequence[str | None], final_pred: Sequence[str | None]
                       ) -> pd.DataFrame:
    """Table 33: items by (gold label, selected policy) — matched, under-engagement (gold YES, policy NO),
    over-engagement (gold NO, policy YES), first pass unparsed (no policy) — with the final accuracy in each cell."""
    rows = []
    for g, v, p in zip(gold, variants, final_pred, strict=True):
        g = str(g).strip().upper()
        kind = ("first pass unparsed" if v is None else "matched" if v == g
                else "under-engagement" if g == "YES" else "over-engagement")
        rows.append({"gold": g, "policy": v or "none", "outcome": kind, "correct": p == g})
    df = pd.DataFrame(rows, columns=["gold", "policy", "outcome", "correct"])
    if df.empty:
        return pd.DataFrame(columns=["outcome", "gold", "policy", "n", "share", "final_accuracy"])
    t = df.groupby(["outcome", "gold", "policy"], as_index=False).agg(n=("correct", "size"),
                                                                      final_accuracy=("correct", "mean"))
    t.insert(4, "share", (t["n"] / len(df)).round(3))
    t["final_accuracy"] = t["final_accuracy"].round(3)
    return t
