"""Stage I teacher distillation (paper §2.3, App. E.1): label-conditioned rationales, validated, with provenance.

Why: the teacher is told the gold label and must explain it in 2–4 sentences ending in `Conclusion: YES|NO`.
A target is accepted only if it parses, its conclusion equals the gold label and its rationale has an allowed
number of sentences. A failing reply gets a bounded number of format-fix follow-ups; every rejection is kept with
its reasons, never silently dropped. The ask / validate / follow-up loop is `lm.ask.ask_until_valid` (shared with
the repair teacher and the judge). All calls go through the cached LLM client, so a rerun makes no call.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

import datasets
import pandas as pd

from ..core.params import DistillParams
from ..lm.ask import Conversation, Turn, ask_until_valid, each
from ..lm.chat import to_chat
from ..lm.llm import LLMClient
from . import prompts
from .parsing import parse_output

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def count_sentences(text: str) -> int:
    """Sentences in a rationale: a split after . ! ? followed by space and a capital or digit.

    Lower-case continuations ("e.g. the", "vs. men") do not split, so common abbreviations do not inflate the
    count (the authors' code split on any whitespace after punctuation).
    """
    text = " ".join(text.split())
    return len([s for s in _SENTENCE_END.split(text) if s.strip()]) if text else 0


# "the conclusion is: NO", "The answer is YES", "the label should be: NO" written inside the analysis.
_INLINE_LABEL = re.compile(
    r"\b(?:conclusion|answer|label)\b[^.\n]{0,25}?\b(?:is|be|:)\s*[:\"'\u201c]?\s*\"?(YES|NO)\b", re.IGNORECASE)


def inline_label(text: str) -> str | None:
    """The last label the reply states inside its prose ("Therefore, the conclusion is: NO."), or None."""
    found = _INLINE_LABEL.findall(text or "")
    return found[-1].upper() if found else None


def validate_target(text: str, gold: str, dp: DistillParams) -> tuple[dict | None, list[str]]:
    """(accepted target fields, []) or (None, reasons).

    Ours beyond the paper's checks: a rationale that itself states the opposite label ("Therefore, the conclusion
    is: YES." before `Conclusion: NO`) is rejected, since it teaches the student to contradict itself."""
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
    stated = inline_label(parsed.rationale)
    if parsed.parsed and stated not in (None, parsed.conclusion):
        reasons.append(f"rationale_states:{stated}")   # "... the conclusion is: YES.\nConclusion: NO"
    if reasons:
        return None, reasons
    return {"rationale": parsed.rationale.strip(), "conclusion": parsed.conclusion,
            "target": prompts.render_target(parsed.rationale.strip(), parsed.conclusion), "sentences": n}, []


_BARE_LABEL = re.compile(r"[\W_]*(yes|no)[\W_]*", re.IGNORECASE)


def _lacks_conclusion_only(conv: Conversation, gold: str) -> bool:
    """The last reply has an analysis and only lacks the conclusion line, and does not state a label that
    contradicts the gold one.

    A reply that argues the gold label but ends "The conclusion is: YES." against gold NO (the CPU teacher's
    commonest failure on EQUAL items, docs/calibration.md §2) is not completed by asking for the line alone: the
    teacher copies its own wrong label (0/8 fixed in the calibration sample). It gets the format fix, which states
    the gold label, instead."""
    last = conv.last
    if last.info["reasons"] != ["unparsed:no_conclusion"] or not parse_output(last.text).rationale:
        return False
    stated = inline_label(last.text)
    return stated is None or stated == gold


def _complete_previous(text: str, previous: str | None) -> str:
    """A fix reply that is only the missing conclusion line completes the previous reply's analysis.

    The weak CPU teacher often writes a good analysis without the `Conclusion:` line ("Therefore, the conclusion
    is NO."); asked for the line alone (CONCLUSION_ONLY_MESSAGE) it answers `Conclusion: NO` or just `NO`. The
    previous analysis plus that line is the target the paper's format asks for; its conclusion is still checked
    against the gold label. `previous`: the item's previous reply (None in round 0).
    """
    if previous is None:
        return text
    before = parse_output(previous)
    if before.failure != "no_conclusion" or not before.rationale:
        return text
    bare = _BARE_LABEL.fullmatch(text.strip())
    if bare:
        return prompts.render_target(before.rationale, bare.group(1).upper())
    now = parse_output(text)
    if now.parsed and not now.rationale:
        return prompts.render_target(before.rationale, now.conclusion)
    return text


def completed_text(turn: Turn) -> str:
    """The reply of `turn`, completed with the previous reply's analysis when it is only the conclusion line."""
    conv = turn.conversation
    return _complete_previous(turn.reply.text, conv.last.text if conv.attempts else None)


def format_follow_up(conv: Conversation, gold: str) -> list[dict]:
    """Stage I's follow-up for a failing reply: the narrow "conclusion line only" request when only that line is
    missing (and no contradicting label is stated inline), else `prompts.FORMAT_FIX_MESSAGE` with the gold label."""
    return prompts.format_fix_messages(conv.messages, conv.last.text, gold,
                                       conclusion_only=_lacks_conclusion_only(conv, gold))


@dataclass
class DistillResult:
    accepted: list[dict]
    rejected: list[dict]

    @property
    def acceptance_rate(self) -> float:
        total = len(self.accepted) + len(self.rejected)
        return len(self.accepted) / total if total else float("nan")


def distill_targets(rows: datasets.Dataset | list[dict], client: LLMClient, dp: DistillParams) -> DistillResult:
    """Teacher targets for every row, with up to dp.format_fix_rounds follow-ups for failing replies
    (`lm.ask.ask_until_valid`; progress "teacher round N")."""
    rows = list(rows)

    def check(turn: Turn):
        fields, reasons = validate_target(completed_text(turn), rows[turn.index]["gold"], dp)
        return fields, {"reasons": reasons}

    conversations = ask_until_valid(
        client, [prompts.teacher_distill_messages(r["question"], r["gold"], dp.variant) for r in rows], each(check),
        lambda i, conv: format_follow_up(conv, rows[i]["gold"]), dp.format_fix_rounds + 1, "teacher")
    provenance = {"backend": client.cfg.backend, "model": client.cfg.model,
                  "temperature": client.cfg.temperature, "max_tokens": client.cfg.max_tokens,
                  "prompt": "E.1", "format_fix_rounds": dp.format_fix_rounds}
    accepted, rejected = [], []
    for r, conv in zip(rows, conversations):
        base = {k: r[k] for k in ("id", "benchmark", "category", "condition", "gold", "question")}
        record = base | {"rounds_used": conv.rounds_used, "teacher": provenance,
                         "cache_keys": [a.cache_key for a in conv.attempts], "raw_text": conv.last.text}
        if conv.ok:
            accepted.append(record | conv.value)
        else:
            rejected.append(record | {"reasons": [a.info["reasons"] for a in conv.attempts]})
    return DistillResult(accepted, rejected)


def balance_labels(targets: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """`distill.balance_labels` (ours; the paper does not balance): keep every target of the rarer gold label and
    an equal number of the other, drawn with `random.Random(seed)`; returns (kept in the original order, dropped).

    Why: the weak cpu teacher fails validation on EQUAL (gold NO) items twice as often as on DIFF items, and a
    student trained on the 2:1 YES mix learns to say YES (docs/calibration.md §2e: on validation items EQUAL
    accuracy .125 -> .250 as accepted, .125 -> .844 balanced)."""
    by_label: dict[str, list[int]] = {}
    for i, t in enumerate(targets):
        by_label.setdefault(str(t["gold"]).strip().upper(), []).append(i)
    if len(by_label) < 2:
        raise ValueError(f"balance_labels: all {len(targets)} accepted targets have gold label "
                         f"{next(iter(by_label), None)}; nothing to balance against (set distill.balance_labels: "
                         "false or check the teacher's rejections)")
    n = min(len(ix) for ix in by_label.values())
    rng = random.Random(seed)
    keep = {i for label in sorted(by_label) for i in
            (by_label[label] if len(by_label[label]) == n else rng.sample(by_label[label], n))}
    return ([t for i, t in enumerate(targets) if i in keep], [t for i, t in enumerate(targets) if i not in keep])


def sft_dataset(targets: list[dict], system_role: bool) -> datasets.Dataset:
    """Conversational prompt-completion examples: the E.3 inference prompt -> the teacher's target.

    The student is trained on the same policy-off prompt it is evaluated with (the gold label is never in the
    student's prompt); trl masks the prompt out of the loss.
    """
    return datasets.Dataset.from_list([
        {"id": t["id"],
         "prompt": to_chat(prompts.inference_messages(t["question"]), system_role),
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
