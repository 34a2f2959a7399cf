"""The one parser for teacher targets, training data and evaluation outputs.

Rules (all matching case-insensitive; the text is stripped first):
* A conclusion statement is the label "Conclusion" + a separator (":" or "-", "–", "—") + YES or NO, tolerating
  markdown around the parts ("**Conclusion:** YES", "### Conclusion: no", "- Conclusion: `NO`"), spacing (also a
  line break between "Conclusion:" and the value), quotes/brackets around the value and trailing punctuation
  ("YES.", "NO!"; not "?"). Nothing else may follow the value on its line ("Conclusion: YES, because ..." is
  no statement).
* It counts where it stands on its own line (anywhere in the text) or at the END of the last non-empty line
  ("... so the answer is clear. Conclusion: NO"). Mentions inside a sentence ("the conclusion: yes is wrong") or
  at the end of an earlier line are ignored.
* A hedge statement is the label + two values ("YES or NO", "YES/NO", "Conclusion: YES or Conclusion: NO") or a
  non-answer word ("both", "neither", "it depends", "unclear", ...), at the same places.
* The final statement decides: a hedge -> failure "hedge"; a YES/NO -> parsed if every YES/NO statement agrees
  with it, else failure "conflicting". Earlier hedges are ignored (they are usually an echo of the instruction).
* Without any statement: empty/whitespace -> "empty"; a typical refusal ("I can't help", "I cannot assist",
  "As an AI ...", "I'm sorry, but ...") -> "refusal"; otherwise "no_conclusion".
* rationale = the text before the final statement (the whole text if there is none) with any earlier statements cut
  out, stripped, without a leading "Analysis:" label; text after the final statement is dropped. For parsed outputs the conclusion is the final
  statement's value, upper-cased.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_F = re.IGNORECASE | re.MULTILINE
_LEAD = r"^[ \t]*+(?:(?:[-*+•]|\d+[.)])[ \t]++)?[*_`~#> \t]*+"    # indentation, bullet, markdown
_LABEL = r"(?<![^\W_])conclusion"                                # no letter/digit before
_SEP = r"[*_`~ \t]*[:：\-–—][*_`~\s]*"                             # may span a line break before the value
_OPEN = r"[\"'“‘(\[]?"
_END = r"[\"'”’)\]*_`~.,;:!。 \t\r]*$"                                # closing marks, punctuation
_B = r"(?![^\W_])"                                                  # word end; "_" is markdown
_YN = r"(yes|no)" + _B
_HEDGE = (rf"(?:(?:yes|no)[ \t]*(?:/|\||\bor\b|\band\b|,|&)[ \t*_`]*(?:conclusion{_SEP})?{_OPEN}(?:yes|no){_B}{_END}"
          rf"|(?:both|neither|it[ \t]+depends|depends|unclear|uncertain|undetermined|undecided|inconclusive|unsure"
          rf"|unknown|maybe|not[ \t]+sure|n/a|cannot[ \t]+(?:be[ \t]+)?determined?){_B}(?:(?!conclusion)[^\n])*$)")
# (kind, own_line, regex): own-line statements anywhere; at the end of the text, also after other text on the line
_PATTERNS = [
    ("decision", True, re.compile(_LEAD + _LABEL + _SEP + _OPEN + _YN + _END, _F)),
    ("hedge", True, re.compile(_LEAD + _LABEL + _SEP + _OPEN + _HEDGE, _F)),
    ("decision", False, re.compile(_LABEL + _SEP + _OPEN + _YN + _END.replace("$", r"\Z"), re.IGNORECASE)),
    ("hedge", False, re.compile(_LABEL + _SEP + _OPEN + _HEDGE.replace("$", r"\Z"), re.IGNORECASE)),
]
_VERBS = (r"help|assist|provid|answer|comply|fulfil|engag|complet|classif|respond|support|participat|creat|generat"
          r"|continu|writ|mak|do\s+that")
_REFUSAL = re.compile(
    r"\b(?:as\s+an\s+ai\b|i(?:\s*['’]\s*m|\s+am)\s+sorry,?\s+but\b|i\s+apologi[sz]e,?\s+but\b"
    r"|i\s+must\s+(?:respectfully\s+)?declin"
    r"|i(?:\s+(?:can\s*not|can['’]?t|won['’]?t|will\s+not|am\s+(?:not\s+able|unable)"
    r"|(?:do\s+not|don['’]?t)\s+feel\s+comfortable)|\s*['’]\s*m\s+(?:not\s+able|unable|not\s+comfortable))"
    rf"(?:\s+to)?\s+(?:{_VERBS}))", re.IGNORECASE)
_ANALYSIS = re.compile(r"^[*_#>\s]*analysis[*_\s]*[:：][*_\s]*", re.IGNORECASE)
FAILURES = ("empty", "refusal", "hedge", "conflicting", "no_conclusion")
# The parser's identity, stored in every prediction record: this file's source (a change of any rule changes it).
PARSER_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


@dataclass(frozen=True)
class ParsedOutput:
    conclusion: str | None   # "YES" | "NO" | None
    rationale: str
    parsed: bool
    failure: str | None      # None | one of FAILURES


def _statements(s: str) -> list[tuple[int, int, str, str | None]]:
    """(start, end, kind, value) of every conclusion statement, in text order; where several matches end at the same
    place the one starting earliest wins (so "Conclusion: YES or Conclusion: NO" is one hedge, not a NO)."""
    found: dict[int, tuple[int, str, str | None]] = {}
    for kind, own_line, rx in _PATTERNS:
        for m in rx.finditer(s) if own_line else filter(None, [rx.search(s)]):
            start = m.start()
            while not own_line and start > 0 and s[start - 1] in "*_`~":   # markdown before the label
                start -= 1
            if m.end() not in found or start < found[m.end()][0]:
                found[m.end()] = (start, m.end(), kind, m.group(1).upper() if kind == "decision" else None)
    return [found[end] for end in sorted(found)]


def _rationale(text: str) -> str:
    return _ANALYSIS.sub("", text.strip(), count=1).strip()


def parse_output(text: str | None) -> ParsedOutput:
    """Parse a model or teacher output into conclusion + rationale (rules in the module docstring)."""
    s = (text or "").strip()
    if not s:
        return ParsedOutput(None, "", False, "empty")
    stmts = _statements(s)
    if not stmts:
        return ParsedOutput(None, _rationale(s), False, "refusal" if _REFUSAL.search(s) else "no_conclusion")
    start, _, kind, value = stmts[-1]
    # earlier statements are cut out of the rationale: a training target or a harm score sees reasoning only
    kept, pos = [], 0
    for st, en, _, _ in stmts[:-1]:
        kept.append(s[pos:st])
        pos = en
    kept.append(s[pos:start])
    rationale = _rationale("".join(kept))
    if kind == "hedge":
        return ParsedOutput(None, rationale, False, "hedge")
    if any(v != value for _, _, k, v in stmts if k == "decision"):
        return ParsedOutput(None, rationale, False, "conflicting")
    return ParsedOutput(value, rationale, True, None)
