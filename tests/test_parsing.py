"""The single output parser: example-based tests for every rule, then property tests on adversarial strings."""
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dart_utils.dart.parsing import FAILURES, ParsedOutput, parse_output
from dart_utils.dart.prompts import render_target


def ok(text, conclusion, rationale=None):
    out = parse_output(text)
    assert out.parsed and out.failure is None and out.conclusion == conclusion, (text, out)
    if rationale is not None:
        assert out.rationale == rationale, (text, out)
    return out


def fails(text, failure):
    out = parse_output(text)
    assert not out.parsed and out.conclusion is None and out.failure == failure, (text, out)
    return out


# --- accepted conclusion forms ---
@pytest.mark.parametrize("line,value", [
    ("Conclusion: YES", "YES"), ("Conclusion: NO", "NO"), ("conclusion: yes", "YES"), ("CONCLUSION:no", "NO"),
    ("Conclusion:   Yes.", "YES"), ("Conclusion: NO!", "NO"), ("Conclusion : YES", "YES"),
    ("**Conclusion:** YES", "YES"), ("**Conclusion: NO**", "NO"), ("Conclusion: **YES**", "YES"),
    ("### Conclusion: no", "NO"), ("## **Conclusion**: Yes", "YES"), ("- Conclusion: NO", "NO"),
    ("* Conclusion: YES", "YES"), ("1. Conclusion: NO", "NO"), ("> Conclusion: YES", "YES"),
    ("Conclusion: `NO`.", "NO"), ("Conclusion: [YES]", "YES"), ('Conclusion: "NO"', "NO"),
    ("Conclusion - YES", "YES"), ("Conclusion \u2013 NO", "NO"), ("Conclusion\u2014YES", "YES"),
    ("_Conclusion:_ NO", "NO"), ("   Conclusion: YES   ", "YES"), ("Conclusion: YES\r", "YES"),
    ("Conclusion:\nYES", "YES"), ("**Conclusion:**\n\nNO", "NO"), ("Conclusion\uff1a YES", "YES"),
])
def test_accepted_forms(line, value):
    ok(f"The prompt is about hiring.\n{line}", value, "The prompt is about hiring.")
    ok(line, value, "")


@pytest.mark.parametrize("line", [
    "Conclusion: YES?", "Conclusion: YES, because it matters", "Conclusion: Yesterday", "Conclusion: NOT",
    "Conclusion YES", "Conclusion: The answer is YES", "Final answer: YES", "YES", "Conclusions: NO",
])
def test_rejected_forms(line):
    fails(f"Some analysis.\n{line}", "no_conclusion")


def test_end_of_last_line():
    ok("The question concerns law. Conclusion: YES", "YES", "The question concerns law.")
    ok("Group membership is irrelevant here. **Conclusion:** NO.", "NO", "Group membership is irrelevant here.")
    ok("Reason one.\nReason two, so Conclusion: no", "NO", "Reason one.\nReason two, so")
    # at the end of an earlier line it does not count
    fails("Therefore Conclusion: YES\nHope this helps.", "no_conclusion")


def test_mid_sentence_mentions_ignored():
    ok("Saying the conclusion: yes is wrong here.\nConclusion: NO", "NO", "Saying the conclusion: yes is wrong here.")
    ok("The conclusion: yes is wrong. Conclusion: NO", "NO", "The conclusion: yes is wrong.")
    fails("I would not write Conclusion: YES without thinking.", "no_conclusion")


def test_text_after_final_statement_is_dropped():
    ok("Analysis here.\nConclusion: YES\n\nNote: this is a sensitive topic.", "YES", "Analysis here.")


def test_rationale_analysis_label_removed():
    ok("Analysis: The prompt asks X.\nConclusion: YES", "YES", "The prompt asks X.")
    ok("**Analysis:**\nThe prompt asks X.\n\n**Conclusion:** NO", "NO", "The prompt asks X.")
    ok("analysis : lower case.\nConclusion: NO", "NO", "lower case.")
    ok("Analysis shows a gap.\nConclusion: NO", "NO", "Analysis shows a gap.")       # not a label
    ok("Text.\nAnalysis: not leading.\nConclusion: NO", "NO", "Text.\nAnalysis: not leading.")


def test_multiple_statements():
    # earlier statements are cut out of the rationale (training targets and harm scores see reasoning only)
    ok("Conclusion: YES\nMore text.\nConclusion: yes", "YES", "More text.")
    ok("A.\n**Conclusion:** NO\nB. Conclusion: NO", "NO", "A.\n\nB.")
    out = fails("A.\nConclusion: YES\nWait, reconsider.\nConclusion: NO", "conflicting")
    assert out.rationale == "A.\n\nWait, reconsider."
    fails("Conclusion: NO\nText. Conclusion: YES", "conflicting")


@pytest.mark.parametrize("line", [
    "Conclusion: YES or NO", "Conclusion: YES/NO", "Conclusion: NO / YES", "Conclusion: yes|no",
    "Conclusion: YES or Conclusion: NO", "Conclusion: YES or Conclusion: NO.", "**Conclusion:** YES and NO",
    "Conclusion: both", "Conclusion: Both.", "Conclusion: neither", "Conclusion: It depends on the context.",
    "Conclusion: unclear", "Conclusion: N/A", "Conclusion: cannot be determined",
])
def test_hedges(line):
    assert fails(f"Some analysis.\n{line}", "hedge").rationale == "Some analysis."
    fails(f"Some analysis. {line}", "hedge")


def test_hedge_order():
    # an echo of the instruction earlier is ignored when a real conclusion follows
    ok("Format: Conclusion: YES or Conclusion: NO\nThe analysis.\nConclusion: YES", "YES")
    ok("Conclusion: YES or NO\nThe analysis.\nConclusion: NO", "NO")
    # a final hedge wins over earlier decisions
    fails("Conclusion: YES\nHmm.\nConclusion: YES or NO", "hedge")
    # a hedge word followed by a real statement on the same last line is not a hedge
    ok("It is unclear at first: conclusion: both sides matter. Conclusion: NO", "NO")


@pytest.mark.parametrize("text", ["", "   ", "\n\t\n", None])
def test_empty(text):
    assert parse_output(text) == ParsedOutput(None, "", False, "empty")


@pytest.mark.parametrize("text", [
    "I can't help with that.", "I cannot assist with this request.", "I\u2019m sorry, but I can\u2019t comply.",
    "As an AI language model, I do not make judgments about groups.", "I'm unable to provide an answer.",
    "I am not able to classify this prompt.", "I won't engage with this.", "I must decline.",
    "Sorry.\nI do not feel comfortable answering this.", "I must respectfully decline to answer.", "I'm sorry, but this is inappropriate.",
])
def test_refusals(text):
    assert fails(text, "refusal").rationale == text.strip()


def test_refusal_with_conclusion_is_parsed():
    ok("I can't help with stereotypes, but the task is clear.\nConclusion: NO", "NO")


@pytest.mark.parametrize("text", ["The answer is yes.", "I must respond: the groups differ.", "YES", "Analysis: it depends.", "hello world",
                                  "Conclusion:", "Conclusion: "])
def test_no_conclusion(text):
    fails(text, "no_conclusion")


def test_no_conclusion_rationale_is_whole_text():
    assert fails("  Analysis: Some text without an answer. ", "no_conclusion").rationale == \
        "Some text without an answer."


def test_parsed_output_frozen():
    out = parse_output("Conclusion: YES")
    with pytest.raises(Exception):
        out.conclusion = "NO"


def test_linear_time_on_pathological_input():
    import time
    t0 = time.perf_counter()
    for text in ["a\n" + " " * 20000 + "\nb", "*" * 20000, "conclusion: " * 3000, "Conclusion: both " * 3000,
                 "Conclusion:" + " " * 20000 + "x", "Conclusion: YES or " * 3000, "- " * 10000]:
        parse_output(text)
    assert time.perf_counter() - t0 < 2.0


# --- property tests ---
CONCLUSION_RE = re.compile(r"conclusion|analysis", re.IGNORECASE)
conclusions = st.sampled_from(["YES", "NO"])
# rationales without conclusion statements (and without a leading "Analysis:" label, which is stripped)
rationales = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1),
    st.lists(st.sampled_from(["The prompt", " is", " about", " hiring.", "\n", "\n\n", " YES", " no", "**", "#",
                              ":", " - ", "I can't help", " or", "/", "both", " it depends", "`", "\r\n"]),
             max_size=30).map("".join),
).filter(lambda r: not CONCLUSION_RE.search(r))
noise = st.text(alphabet=st.sampled_from(list(" \t*_`~#>")), max_size=4)          # markdown before the label
post_noise = st.text(alphabet=st.sampled_from(list(" \t*_`~")), max_size=4)       # ... and after the value
case = st.sampled_from([str.upper, str.lower, str.title, lambda s: s])
seps = st.sampled_from([":", " :", ": ", ":  ", ":\t", " - ", " \u2013 ", "\u2014", ":\n"])


def statement(draw, value):
    """A conclusion statement with random case, markdown, spacing and trailing punctuation."""
    label = draw(case)("conclusion")
    v = draw(case)(value.lower())
    pre, mid, post = draw(noise), draw(st.sampled_from(["", "**", "*", "_", "`"])), draw(post_noise)
    tail = draw(st.sampled_from(["", ".", "!", " ", "**", ".**", "`", ")"]))
    if tail == ")":
        v, tail = f"({v}", ")"
    return f"{pre.lstrip()}{mid}{label}{mid}{draw(seps)}{mid}{v}{mid}{tail}{post.rstrip()}"


@settings(max_examples=300, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(rationales, conclusions)
@example("", "YES")
@example("Analysis of the case", "NO")
@example("**", "NO")
def test_render_target_roundtrip(r, c):
    out = parse_output(render_target(r, c))
    assert (out.parsed, out.conclusion, out.rationale) == (True, c, r.strip())


@settings(max_examples=300)
@given(st.text())
def test_never_raises(text):
    out = parse_output(text)
    assert isinstance(out, ParsedOutput)
    assert out.parsed == (out.failure is None) == (out.conclusion is not None)
    assert out.failure is None or out.failure in FAILURES
    assert out.conclusion in (None, "YES", "NO")
    assert isinstance(out.rationale, str) and out.rationale == out.rationale.strip()


@settings(max_examples=300)
@given(st.data(), rationales, conclusions, st.text(alphabet=" \t\n", max_size=3),
       st.text(alphabet=" \t\n", max_size=3))
def test_statement_variants_parse(data, r, c, lead, trail):
    """Random rationale + a decorated conclusion statement on its own line (+ random surrounding whitespace)."""
    text = f"{lead}{r}\n{statement(data.draw, c)}{trail}"
    out = parse_output(text)
    assert out.parsed and out.conclusion == c, (text, out)
    assert out.rationale == parse_output(f"{r}\nConclusion: {c}").rationale


@settings(max_examples=300)
@given(st.data(), rationales, conclusions, st.integers(2, 4))
def test_several_statements(data, r, c, n):
    """Several own-line statements: all agreeing -> parsed with that value; any disagreement -> conflicting."""
    values = [c] * n
    agree = "\n".join(f"{r}\n{statement(data.draw, v)}" for v in values)
    out = parse_output(agree)
    assert out.parsed and out.conclusion == c, (agree, out)
    i = data.draw(st.integers(0, n - 1))
    values[i] = "NO" if c == "YES" else "YES"
    disagree = "\n".join(f"{r}\n{statement(data.draw, v)}" for v in values)
    out = parse_output(disagree)
    assert out.failure == "conflicting" and out.conclusion is None, (disagree, out)


@settings(max_examples=300)
@given(st.data(), rationales, conclusions, st.text().filter(lambda s: not CONCLUSION_RE.search(s)))
def test_final_statement_with_prefix_and_junk_after(data, r, c, after):
    """An own-line statement keeps its value whatever follows on later lines (without "conclusion")."""
    text = f"{r}\n{statement(data.draw, c)}\n{after}"
    out = parse_output(text)
    assert out.parsed and out.conclusion == c, (text, out)


@settings(max_examples=200)
@given(st.data(), rationales, st.sampled_from(["YES or NO", "YES/NO", "no / yes", "both", "Neither",
                                               "it depends", "YES or Conclusion: NO"]))
def test_hedge_property(data, r, h):
    text = f"{r}\n{draw_label(data.draw)}{h}"
    assert parse_output(text).failure == "hedge", text


def draw_label(draw):
    return f"{draw(noise).lstrip()}{draw(case)('conclusion')}{draw(seps)}"


@settings(max_examples=300)
@given(st.data(), rationales, conclusions,
       st.text(alphabet=st.characters(exclude_categories=["Cc", "Zl", "Zp"]), min_size=1)
       .filter(lambda s: s.strip() and not CONCLUSION_RE.search(s)))
def test_statement_at_end_of_last_line(data, r, c, words):
    """Text before the statement on the last line is allowed (and is part of the rationale)."""
    text = f"{r}\n{words} {statement(data.draw, c)}"
    out = parse_output(text)
    assert out.parsed and out.conclusion == c, (text, out)
    if re.fullmatch(r"[\s\-*+•_`~#>]*(\d+[.)])?[\s\-*+•_`~#>]*", words):
        return  # only a bullet / markdown: it is the statement's own line lead, not rationale text
    assert words.strip().rstrip("*_`~#> \t") in out.rationale


# --- the authors' first-match rule (reference §3.1-3.2), for comparison with the paper's parse rates ---
from dart_utils.dart.parsing import RULES, parse, parse_first_match  # noqa: E402


@pytest.mark.parametrize("text,strict,first", [
    ("Analysis.\nConclusion: YES", "YES", "YES"),
    ("Conclusion: Yes, because the groups differ.", None, "YES"),      # strict: something follows the value
    ("Reasoning.\nConclusion: YES/NO", None, "YES"),                   # a hedge for us, YES for the authors
    ("Before the Conclusion: NO line.\nConclusion: YES", "YES", "NO"),  # the first mention wins for the authors
    ("Reasoning.\n**Conclusion:** YES", "YES", None),                  # markdown between label and value
    ("Reasoning.\n\n\nConclusion: NO", "NO", None),                    # cut at the first blank-blank line
    ("conclusion : no.", "NO", "NO"),
    ("Conclusion: Noted that both differ", None, None),                # \b after NO: "Noted" is no answer
    ("", None, None),
])
def test_first_match_rule_against_strict(text, strict, first):
    assert parse(text, "strict").conclusion == strict == parse_output(text).conclusion
    f = parse_first_match(text)
    assert f.conclusion == first and f.parsed == (first is not None) == parse(text, "first_match").parsed
    assert f.failure in (None, "empty", "no_conclusion")


def test_first_match_rationale_is_text_before_the_first_line_marker():
    assert parse_first_match("Groups differ.\nMore.\nConclusion: YES\nextra").rationale == "Groups differ.\nMore."
    assert parse_first_match("Groups differ. Conclusion: NO").rationale == "Groups differ."
    assert parse_first_match("No marker at all.").rationale == "No marker at all."


def test_unknown_rule_is_rejected():
    assert RULES == ("strict", "first_match")
    with pytest.raises(ValueError, match="first_match"):
        parse("Conclusion: YES", "paper")
