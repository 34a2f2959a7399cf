r"""The one parser for teacher targets, training data and evaluation outputs, with two named rules (`RULES`).

* `strict` (ours; `parse_output`): every training target, drift case and headline number uses it. Why: a target
  or prediction must carry one unambiguous final decision, and the rationale must be the reasoning alone.
* `first_match` (the authors' code, reference §3.1; `parse_first_match`): the first `Conclusion\s*:\s*(YES|NO)\b`
  anywhere in the output cut at its first blank-blank line, case-insensitive. The paper's parse rates (Table 2:
  61.8–80.5 % for M0) were counted this way, so every parse-rate and accuracy table shows it beside `strict` for
  comparison. It also accepts "Conclusion: Yes, because ...", "Conclusion: YES/NO" (as YES) and an earlier
  mention over the final line; it fails `**Conclusion:** YES`, which `strict` accepts.

Rules of `strict` (all matching case-insensitive; the text is stripped first):
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
RULES = ("strict", "first_match")      # the headline rule first
_FIRST = re.compile(r"Conclusion\s*:\s*(YES|NO)\b", re.IGNORECASE)                 # reference §3.1, verbatim
_FIRST_LINE = re.compile(r"(.*?)(?:\n\s*Conclusion\s*:\s*(?:YES|NO)\b.*)$", re.IGNORECASE | re.DOTALL)   # §3.2
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


def parse_first_match(text: str | None) -> ParsedOutput:
    """The authors' rule (reference §3.1–3.2), for comparison with the paper's parse rates: the text is cut at its
    first "\n\n\n" and stripped; the conclusion is the first `Conclusion: YES|NO` match anywhere; the rationale is
    the text before the first such marker that begins a line, else before the first match, else the whole text.
    Failures are "empty" or "no_conclusion" only (the authors detect no refusal or hedge)."""
    s = (text or "").split("\n\n\n", 1)[0].strip()
    if not s:
        return ParsedOutput(None, "", False, "empty")
    m = _FIRST.search(s)
    if not m:
        return ParsedOutput(None, s, False, "no_conclusion")
    line = _FIRST_LINE.match(s)
    return ParsedOutput(m.group(1).upper(), (line.group(1) if line else s[:m.start()]).strip(), True, None)


def parse(text: str | None, rule: str = "strict") -> ParsedOutput:
    """Parse with a named rule (`RULES`)."""
    if rule == "strict":
        return parse_output(text)
    if rule == "first_match":
        return parse_first_match(text)
    raise ValueError(f"parse rule must be one of {RULES}, got {rule!r}")
