"""Stage I teacher distillation (paper §2.3, App. E.1): label-conditioned rationales, validated, with provenance.

Why: the teacher is told the gold label and must explain it in 2–4 sentences ending in `Conclusion: YES|NO`.
A target is accepted only if it parses, its conclusion equals the gold label and its rationale has an allowed
number of sentences. A failing reply gets a bounded number of format-fix follow-ups; every rejection is kept with
its reasons, never silently dropped. All calls go through the cached LLM client, so a rerun makes no call.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import datasets
import pandas as pd

from . import prompts
from .llm import LLMClient
from .params import DistillParams
from .parsing import parse_output

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def count_sentences(text: str) -> int:
    """Sentences in a rationale: a split after . ! ? followed by space and a capital or digit.

    Lower-case continuations ("e.g. the", "vs. men") do not split, so common abbreviations do not inflate the
    count (the authors' code split on any whitespace after punctuation).
    """
    text = " ".join(text.split())
    return len([s for s in _SENTENCE_END.split(text) if s.strip()]) if text else 0


def validate_target(text: str, gold: str, dp: DistillParams) -> tuple[dict | None, list[str]]:
    """(accepted target fields, []) or (None, reasons)."""
    parsed = parse_output(text)
    reasons = []
    if not parsed.parsed:
        reasons.append(f"unparsed:{parsed.failure}")
    elif parsed.conclusion != gold:
        reasons.append(f"wrong_conclusion:{parsed.conclusion}")
    n = count_sentences(parsed.rationale)
    if parsed.parsed and not dp.min_sentences <= n <= dp.max_sentences:
        reasons.append(f"sentences:{n}")
    if parsed.parsed and not parsed.rationale.strip():
        reasons.append("empty_rationale")
    if reasons:
        return None, reasons
    return {"rationale": parsed.rationale.strip(), "conclusion": parsed.conclusion,
            "target": prompts.render_target(parsed.rationale.strip(), parsed.conclusion), "sentences": n}, []


_BARE_LABEL = re.compile(r"[\W_]*(yes|no)[\W_]*", re.IGNORECASE)


def _lacks_conclusion_only(state: dict) -> bool:
    """The last reply has an analysis and only lacks the conclusion line."""
    last = state["history"][-1]
    return last["reasons"] == ["unparsed:no_conclusion"] and bool(parse_output(last["text"]).rationale)


def _complete_previous(text: str, history: list[dict]) -> str:
    """A fix reply that is only the missing conclusion line completes the previous reply's analysis.

    The weak CPU teacher often writes a good analysis without the `Conclusion:` line ("Therefore, the conclusion
    is NO."); asked for the line alone (CONCLUSION_ONLY_MESSAGE) it answers `Conclusion: NO` or just `NO`. The
    previous analysis plus that line is the target the paper's format asks for; its conclusion is still checked
    against the gold label.
    """
    if not history:
        return text
    before = parse_output(history[-1]["text"])
    if before.failure != "no_conclusion" or not before.rationale:
        return text
    bare = _BARE_LABEL.fullmatch(text.strip())
    if bare:
        return prompts.render_target(before.rationale, bare.group(1).upper())
    now = parse_output(text)
    if now.parsed and not now.rationale:
        return prompts.render_target(before.rationale, now.conclusion)
    return text


@dataclass
class DistillResult:
    accepted: list[dict]
    rejected: list[dict]

    @property
    def acceptance_rate(self) -> float:
        total = len(self.accepted) + len(self.rejected)
        return len(self.accepted) / total if total else float("nan")


def distill_targets(rows: datasets.Dataset | list[dict], client: LLMClient, dp: DistillParams) -> DistillResult:
    """Teacher targets for every row, with up to dp.format_fix_rounds follow-ups for failing replies."""
    rows = list(rows)
    first = [prompts.teacher_distill_messages(r["question"], r["gold"]) for r in rows]
    state = [{"messages": m, "history": []} for m in first]
    pending = list(range(len(rows)))
    for round_no in range(dp.format_fix_rounds + 1):
        if not pending:
            break
        if round_no == 0:
            batch = [state[i]["messages"] for i in pending]
        else:
            batch = [prompts.format_fix_messages(state[i]["messages"], state[i]["history"][-1]["text"],
                                                 rows[i]["gold"], conclusion_only=_lacks_conclusion_only(state[i]))
                     for i in pending]
        replies = client.chat_many(batch, desc=f"teacher round {round_no}")
        still = []
        for i, reply in zip(pending, replies):
            text = _complete_previous(reply.text, state[i]["history"])
            fields, reasons = validate_target(text, rows[i]["gold"], dp)
            state[i]["history"].append({"round": round_no, "text": reply.text, "reasons": reasons,
                                        "cache_key": reply.cache_key, "usage": reply.usage})
            if fields:
                state[i]["accepted"] = fields
            else:
                still.append(i)
        pending = still
    provenance = {"backend": client.cfg.backend, "model": client.cfg.model,
                  "temperature": client.cfg.temperature, "max_tokens": client.cfg.max_tokens,
                  "prompt": "E.1", "format_fix_rounds": dp.format_fix_rounds}
    accepted, rejected = [], []
    for r, s in zip(rows, state):
        base = {k: r[k] for k in ("id", "benchmark", "category", "condition", "gold", "question")}
        record = base | {"rounds_used": len(s["history"]) - 1, "teacher": provenance,
                         "cache_keys": [h["cache_key"] for h in s["history"]],
                         "raw_text": s["history"][-1]["text"]}
        if "accepted" in s:
            accepted.append(record | s["accepted"])
        else:
            rejected.append(record | {"reasons": [h["reasons"] for h in s["history"]]})
    return DistillResult(accepted, rejected)


def sft_dataset(targets: list[dict], system_role: bool) -> datasets.Dataset:
    """Conversational prompt-completion examples: the E.3 inference prompt -> the teacher's target.

    The student is trained on the same policy-off prompt it is evaluated with (the gold label is never in the
    student's prompt); trl masks the prompt out of the loss.
    """
    return datasets.Dataset.from_list([
        {"id": t["id"],
         "prompt": prompts.to_chat(prompts.inference_messages(t["question"]), system_role),
         "completion": [{"role": "assistant", "content": t["target"]}]}
        for t in targets
    ])


def acceptance_table(result: DistillResult) -> pd.DataFrame:
    """Accepted targets per benchmark and condition, accepted without a fix, and the rejection reasons."""
    rows = [{"benchmark": r["benchmark"], "condition": r["condition"], "accepted": True,
             "first_try": r["rounds_used"] == 0, "reason": ""} for r in result.accepted]
    rows += [{"benchmark": r["benchmark"], "condition": r["condition"], "accepted": False, "first_try": False,
              "reason": ";".join(r["reasons"][-1])} for r in result.rejected]
    df = pd.DataFrame(rows)
    table = df.groupby(["benchmark", "condition"]).agg(
        n=("accepted", "size"), accepted=("accepted", "sum"), accepted_first_try=("first_try", "sum")).reset_index()
    table["acceptance_rate"] = (table["accepted"] / table["n"]).round(3)
    reasons = Counter(x.split(":")[0] for r in result.rejected for x in r["reasons"][-1])
    table.attrs["final_rejection_reasons"] = dict(reasons)
    return table
