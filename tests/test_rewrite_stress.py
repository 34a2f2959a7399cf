"""Table 39 (App. O.5): the top-Δ hate failing subset, the teacher's rewrites and the table; a scripted teacher and a
keyword hate scorer (the real ones run in notebook 05, `external.teacher_rewrite`)."""

import pandas as pd
import pytest

from dart_utils.core.paper import reported
from dart_utils.dart import rewrite_stress as R
from dart_utils.lm.llm import LLMResponse


class Teacher:
    """Rewrites by dropping the word "vermin" (so a rewrite of an answer that only had "vermin" is no longer
    flagged); answers nothing for prompts containing "silent"."""

    def __init__(self):
        self.prompts = []

    def chat_many(self, batch, desc=""):
        self.prompts += [m[0]["content"] for m in batch]
        out = []
        for m in batch:
            text = m[0]["content"]
            answer = text.split("Answer: ", 1)[1]
            out.append(LLMResponse("" if "silent" in text else answer.replace("vermin", "people"), "stop",
                                   cache_key=f"k{len(out)}"))
        return out


class Hate:
    name = "keyword"

    def score(self, texts):
        return [0.9 if "slur" in t else 0.6 if "vermin" in t else 0.1 for t in texts]


def _frame():
    rows = [  # id, benchmark, parsed_m0, hate_m0, hate_m_dart
        ("h1", "HateCheck", True, 0.1, 0.6),     # failing, Δ .5
        ("h2", "HateCheck", True, 0.2, 0.9),     # failing, Δ .7 (first)
        ("h3", "HateCheck", False, 0.0, 0.9),    # M0 did not answer: not matched
        ("h4", "HateCheck", True, 0.8, 0.7),     # flagged but not above M0
        ("h5", "HateCheck", True, 0.1, 0.4),     # not flagged
        ("h6", "HateCheck", True, 0.1, 0.6),     # failing, Δ .5, the teacher stays silent
        ("b1", "BOLD", True, 0.0, 0.9),          # another suite
    ]
    df = pd.DataFrame(rows, columns=["id", "benchmark", "parsed_m0", "hate_m0", "hate_m_dart"])
    df["prompt"] = [f"prompt {i}" + (" silent" if i == "h6" else "") for i in df["id"]]
    raw = {"h1": "They are vermin, some say; that is false.\nConclusion: NO",
           "h2": "The slur is hateful and wrong.\nConclusion: NO", "h6": "vermin talk.\nConclusion: NO"}
    outputs = [{"id": i, "raw_text": raw.get(i, "fine.\nConclusion: NO")} for i in df["id"]]
    return df, outputs


def test_failing_subset_is_matched_flagged_and_above_m0_largest_delta_first():
    df, outputs = _frame()
    sub = R.failing_subset(df, outputs, 0.5)
    assert [s["id"] for s in sub] == ["h2", "h1", "h6"]
    assert sub[0]["delta"] == pytest.approx(0.7) and sub[0]["answer"].startswith("The slur")
    assert R.failing_subset(df, outputs, 0.95) == []
    with pytest.raises(ValueError, match="hate_scorer"):
        R.failing_subset(df.drop(columns=["hate_m_dart"]), outputs, 0.5)


def test_rewrites_are_scored_on_the_rationale_and_a_silent_teacher_is_counted():
    df, outputs = _frame()
    teacher = Teacher()
    rw = R.teacher_rewrites(R.failing_subset(df, outputs, 0.5), teacher, Hate())
    by = {r["id"]: r for r in rw}
    assert teacher.prompts[0] == R.REWRITE_PROMPT.format(prompt="prompt h2", answer=outputs[1]["raw_text"])
    assert by["h2"]["hate_rewrite"] == 0.9 and by["h1"]["hate_rewrite"] == 0.1     # "vermin" reworded
    assert by["h6"]["rewrite_failed"] and by["h6"]["hate_rewrite"] is None
    t = R.table39(rw, matched=5, threshold=0.5, paper=reported("external")["table39"]).set_index("output")
    assert t.loc["M_DART (failing subset)", ["n", "hate-flagged %", "share of matched prompts %"]].tolist() == [3, 100.0, 60.0]
    assert t.loc["teacher rewrite", ["n", "hate-flagged %"]].tolist() == [2, 50.0]          # h2 still flagged
    assert t.loc["teacher rewrite", "paper hate-flagged %"] == 46.2
    assert t.loc["M_DART (failing subset)", "paper share %"] == 1.96
    empty = R.table39([], matched=0, threshold=0.5, paper=reported("external")["table39"]).set_index("output")
    assert empty.loc["teacher rewrite", "n"] == 0 and empty["hate-flagged %"].isna().all()
