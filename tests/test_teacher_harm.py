"""K.4 teacher vs student harm (Table 22): the teacher's replies become audit candidates, its drift rate is set beside
M_int's with an exact test. Scripted teacher and judge (control flow and arithmetic); the real teacher and judge run
in notebook 06 (`baselines.teacher_harm`)."""

import pytest

from dart_utils.analysis.baselines import table22
from dart_utils.core import params as P
from dart_utils.dart import audit, teacher_harm
from dart_utils.dart.evaluation import to_predictions
from dart_utils.lm.llm import LLMResponse
from test_audit import VerdictByText   # the judge stand-in: Model B is worse exactly when its output has HARM

DP = P.load("cpu").distill


class Teacher:
    """E.1 replies by question: "harm" questions get a rationale with HARM in it, "bad" ones never end with a
    conclusion (rejected after the format-fix rounds), the rest a clean two-sentence rationale."""

    def __init__(self):
        self.cfg, self.calls = P.load("ci").teacher, 0

    def chat_many(self, batch, desc="", **kw):
        out = []
        for m in batch:
            self.calls += 1
            user = m[1]["content"]
            gold = "NO"                                               # every test row's gold label
            if "bad" in user:
                text = "I would rather not say."
            elif "harm" in user:
                text = f"HARM about a group. It is their nature.\nConclusion: {gold}"
            else:
                text = f"The groups are treated alike here. Nothing differs.\nConclusion: {gold}"
            out.append(LLMResponse(text, "stop", cache_key=f"t{self.calls}"))
        return out


def _rows(questions):
    return [{"id": f"K-{i}", "benchmark": "N1", "category": "normative", "condition": "EQUAL", "gold": "NO",
             "question": q} for i, q in enumerate(questions)]


def test_teacher_replies_become_audit_candidates_and_table22_compares_them():
    rows = _rows(["q plain 0", "q harm 1", "q bad 2", "q plain 3"])
    t_preds, result = teacher_harm.teacher_predictions(rows, Teacher(), DP)
    assert [p["model"] for p in t_preds] == ["teacher"] * 4
    assert [p["accepted"] for p in t_preds] == [True, True, False, True]       # the rejected reply is kept
    assert t_preds[2]["parsed"] is False and t_preds[1]["prediction"] == "NO"
    assert len(result.accepted) == 3 and len(result.rejected) == 1
    m0 = to_predictions(rows, ["Fine.\nConclusion: NO"] * 4, [3] * 4, "m0")
    h_t = [0.0, 0.5, 0.0, 0.0]
    t_audit = audit.run_audit(rows, m0, t_preds, [0.0] * 4, h_t, VerdictByText(), 0.01, mode="all", candidate="teacher")
    assert [c["id"] for c in t_audit.pool] == ["K-1"] and t_audit.pool.cases[0]["candidate"] == "teacher"
    teacher_row = teacher_harm.harm_profile(t_audit.records, t_audit.judge.records, t_audit.pool.cases, 4,
                                            accepted=3)
    assert (teacher_row["screened (Δ > τ)"], teacher_row["judged"], teacher_row["drift cases"]) == (1, 4, 1)
    assert teacher_row["drift %"] == 25.0 and teacher_row["severe %"] == 25.0 and teacher_row["novel"] == 1

    # M_int: drift on K-0, K-1, K-3; the judge failed on K-2 (unknown, not "no drift")
    m_int_verdicts = [{"id": "K-0", "status": "ok", "candidate_worse": True},
                      {"id": "K-1", "status": "ok", "candidate_worse": True},
                      {"id": "K-2", "status": "failed", "candidate_worse": None},
                      {"id": "K-3", "status": "ok", "candidate_worse": True}]
    m_int_cases = [{"id": i, "severity": "moderate", "novel": False} for i in ("K-0", "K-1", "K-3")]
    m_int_pairs = [{"id": r["id"], "screened": True, "h_candidate": 0.2} for r in rows]
    m_int_row = teacher_harm.harm_profile(m_int_pairs, m_int_verdicts, m_int_cases, 4)
    assert m_int_row["judge failures"] == 1 and m_int_row["drift %"] == 75.0 and m_int_row["amplified"] == 3
    flags = {"teacher": teacher_harm.drift_flags(t_audit.judge.records),
             "M_int": teacher_harm.drift_flags(m_int_verdicts)}
    assert flags["M_int"]["K-2"] is None
    t22 = table22({"teacher": teacher_row, "M_int": m_int_row}, flags)
    assert list(t22["source"]) == ["teacher", "M_int"]
    assert list(t22["paper drift %"]) == [2.0, 26.8]                       # from paper_reported.yaml
    test = t22.attrs["test"]
    assert (test["n"], test["drift_a"], test["drift_b"], test["only_a"], test["only_b"]) == (3, 1, 3, 0, 2)
    assert test["p"] == pytest.approx(0.5)                                 # binomial(0 of 2) two-sided
    assert "p = 0.5" in t22.attrs["note"]
    with pytest.raises(ValueError, match="two sources"):
        table22({"teacher": teacher_row}, {"teacher": flags["teacher"]})


def test_harm_profile_wilson_interval_and_empty_pool():
    row = teacher_harm.harm_profile([{"id": "a", "screened": False, "h_candidate": 0.0}],
                                    [{"id": "a", "status": "ok", "candidate_worse": False}], [], 1)
    assert row["drift cases"] == 0 and row["drift %"] == 0.0 and row["novel % of drift"] is None
    assert row["drift 95% CI"] == "[0.0, 79.3]"                             # Wilson, 0 of 1
