"""K.5 gold- vs predicted-label conditioning (Table 23): the teacher's own labels, the relabelled rows that distillation
and the audit read, the audit's agreement with the gold-conditioned one, repair success and the table. Scripted teacher
and judge (control flow and arithmetic); the real ones run in notebook 06 (`baselines.label_conditioning`)."""

import math

import pytest

from dart_utils.analysis.label_conditioning import stage1_comparison, table23
from dart_utils.core import params as P
from dart_utils.core.paper import reported
from dart_utils.dart import audit, prompts
from dart_utils.dart import label_conditioning as k5
from dart_utils.dart.evaluation import to_predictions
from dart_utils.lm.llm import LLMResponse

DP = P.load("cpu").distill          # format_fix_rounds: the conclusion-only follow-ups


class Teacher:
    """Answers the E.3 prompt by question: "yes"/"no" questions conclude so; "late" ones first omit the conclusion
    line and then give it alone; "never" ones never conclude."""

    def __init__(self):
        self.batches = []

    def chat_many(self, batch, desc="", **kw):
        self.batches.append(batch)
        out = []
        for m in batch:
            user = m[1]["content"]
            follow_up = len(m) > 2
            if "never" in user:
                text = "It is hard to say."
            elif "late" in user:
                text = "NO" if follow_up else "The groups are alike here."
            else:
                text = f"Some analysis.\nConclusion: {'YES' if 'yes' in user else 'NO'}"
            out.append(LLMResponse(text, "stop", cache_key=f"t{len(self.batches)}-{len(out)}"))
        return out


def _rows(spec):
    return [{"id": f"K-{i}", "benchmark": "D1", "category": "descriptive", "condition": "DIFF" if g == "YES" else
             "EQUAL", "gold": g, "question": q} for i, (q, g) in enumerate(spec)]


def test_teacher_labels_use_the_students_prompt_and_count_the_undecided():
    rows = _rows([("q yes", "YES"), ("q no", "YES"), ("q late", "NO"), ("q never", "NO")])
    t = Teacher()
    labels = k5.teacher_labels(rows, t, DP)
    assert [x["teacher_label"] for x in labels] == ["YES", "NO", "NO", None]
    assert [x["rounds_used"] for x in labels][:3] == [0, 0, 1]
    assert labels[3]["failure"] == "no_conclusion"
    first = t.batches[0]
    assert first == [prompts.inference_messages(r["question"]) for r in rows]      # E.3, never the gold label
    assert all(m[-1]["content"] == prompts.CONCLUSION_ONLY_MESSAGE for m in t.batches[1])
    assert len(t.batches) == DP.format_fix_rounds + 1                             # bounded
    s = k5.label_summary(labels)
    assert (s["n"], s["decided"], s["undecided"], s["differs_from_gold"]) == (4, 3, 1, 1)
    assert s["teacher_accuracy"] == pytest.approx(2 / 3)

    relabelled, undecided = k5.relabel(rows, labels)
    assert undecided == ["K-3"]
    assert [(r["gold"], r["gold_true"]) for r in relabelled] == [("YES", "YES"), ("NO", "YES"), ("NO", "NO")]
    with pytest.raises(ValueError, match="K-3"):
        k5.relabel(rows, labels[:3])


class JudgeByLabel:
    """Judge stand-in that reads the label it is given: Model B is "worse" (moderate) exactly when its conclusion
    contradicts the prompt's gold label, as an over-literal judge would."""

    def chat_many(self, batch, desc="", **kw):
        out = []
        for m in batch:
            text = m[1]["content"]
            gold = text.split("Gold label:", 1)[1].split()[0]
            b = text.split("Model B", 1)[1]
            worse = f"Conclusion: {'NO' if gold == 'YES' else 'YES'}" in b
            out.append(LLMResponse('{"is_regression": %s, "severity": "%s", "reason": "r", "a_correct": true, '
                                   '"b_correct": %s}' % (str(worse).lower(), "moderate" if worse else "none",
                                                         str(not worse).lower()), "stop", cache_key="j"))
        return out


def test_the_audit_reads_the_teachers_label_and_agreement_counts_the_extra_false_positives():
    rows = _rows([("q0", "YES"), ("q1", "YES"), ("q2", "NO"), ("q3", "NO")])
    m0 = to_predictions(rows, ["Unsure."] * 4, [3] * 4, "m0")
    m_int = to_predictions(rows, ["A.\nConclusion: YES", "B.\nConclusion: NO", "C.\nConclusion: NO",
                                  "D.\nConclusion: NO"], [3] * 4, "m_int")
    h = [0.0] * 4
    gold_audit = audit.run_audit(rows, m0, m_int, h, h, JudgeByLabel(), 0.01, mode="all")
    assert [c["id"] for c in gold_audit.pool] == ["K-1"]                   # M_int says NO where y* = YES
    labels = [{"id": "K-0", "gold": "YES", "teacher_label": "NO"}, {"id": "K-1", "gold": "YES", "teacher_label": "YES"},
              {"id": "K-2", "gold": "NO", "teacher_label": "NO"}, {"id": "K-3", "gold": "NO", "teacher_label": "YES"}]
    relabelled, _ = k5.relabel(rows, labels)
    pred_audit = audit.run_audit(relabelled, m0, m_int, h, h, JudgeByLabel(), 0.01, mode="all")
    assert sorted(c["id"] for c in pred_audit.pool) == ["K-0", "K-1", "K-3"]   # two false positives from ŷ ≠ y*
    ids = [r["id"] for r in rows]
    agree = audit.compare_audits(audit.drift_flags(ids, gold_audit.judge.records, gold_audit.pool.cases),
                               audit.drift_flags(ids, pred_audit.judge.records, pred_audit.pool.cases),
                               {"K-0", "K-3"})
    assert (agree["tp"], agree["fp"], agree["fn"], agree["tn"]) == (1, 2, 0, 1)
    assert agree["precision"] == pytest.approx(1 / 3) and agree["recall"] == 1.0
    assert (agree["flipped_where_label_changed"], agree["flipped_elsewhere"]) == (2, 0)
    assert agree["kappa"] == pytest.approx(0.2)                            # po .5, pe .375


def test_agreement_skips_judge_failures_and_handles_one_class():
    flags = audit.drift_flags(["a", "b", "c"], [{"id": "b", "status": "failed"}, {"id": "a", "status": "ok"}],
                           [{"id": "a"}])
    assert flags == {"a": True, "b": None, "c": False}                     # c: never judged (not screened)
    agree = audit.compare_audits(flags, {"a": True, "b": True, "c": False})
    assert (agree["n"], agree["undecided"], agree["tp"], agree["tn"]) == (2, 1, 1, 1)
    none = audit.compare_audits({"a": False, "b": False}, {"a": False, "b": False})
    assert none["precision"] is None and none["recall"] is None and math.isnan(none["kappa"])


def test_repair_success_needs_no_drift_after_repair_and_a_correct_answer():
    gold = {"r1": "YES", "r2": "NO", "r3": "YES", "r4": "NO"}
    m_dart = [{"id": "r1", "prediction": "YES"}, {"id": "r2", "prediction": "YES"},
              {"id": "r3", "prediction": "YES"}, {"id": "r4", "prediction": "NO"}]
    flags = {"r1": False, "r2": False, "r3": True, "r4": None}               # r4: the re-audit's judge failed
    out = k5.repair_success(["r1", "r2", "r3", "r4", "r1"], gold, m_dart, flags)
    assert out == {"targets": 4, "repaired": 2, "correct": 3, "success": 1, "rate": 0.25}
    assert k5.repair_success([], gold, m_dart, flags)["rate"] is None
    with pytest.raises(ValueError, match="r9"):
        k5.repair_success(["r9"], gold, m_dart, flags)


def test_table23_sets_this_run_beside_the_papers_numbers():
    rows = _rows([("q0", "YES"), ("q1", "NO"), ("q2", "NO"), ("q3", "YES")])
    gold_preds = to_predictions(rows, ["Conclusion: YES", "Conclusion: NO", "Conclusion: NO", "Conclusion: NO"],
                                [2] * 4, "m_int")
    pred_preds = to_predictions(rows, ["Conclusion: YES", "Conclusion: YES", "x", "Conclusion: NO"], [2] * 4,
                                "stage1_predicted")
    s1 = stage1_comparison(gold_preds, pred_preds)
    assert s1["gold"]["acc_overall"] == 0.75 and s1["predicted"]["acc_overall"] == 0.25
    assert (s1["mcnemar"]["b"], s1["mcnemar"]["c"]) == (2, 0) and s1["mcnemar"]["delta"] == -0.5
    agree = audit.compare_audits({"a": True, "b": False, "c": False}, {"a": True, "b": True, "c": False}, {"b"})
    labels = {"n": 4, "decided": 4, "undecided": 0, "differs_from_gold": 1, "teacher_accuracy": 0.75}
    t = table23(s1, labels, agree, labels, {"targets": 2, "repaired": 1, "correct": 2, "success": 1, "rate": 0.5},
                   {"gold": 10, "predicted": 9}, reported("table23"),
                {"targets": 3, "repaired": 0, "correct": 1, "success": 0, "rate": 0.0})
    cell = {(r["conditioning"][:4], r["measure"]): (r["this run"], r["paper"]) for _, r in t.iterrows()}
    assert cell[("gold", "accuracy on the test split, %")] == ("75.0", "68.2")
    assert cell[("teac", "accuracy on the test split, %")] == ("25.0", "64.1")
    assert cell[("teac", "precision / recall vs the gold audit, %")][0] == "50.0 / 100.0"
    assert cell[("teac", "additional false positives / missed cases")] == ("1 / 0", "187 / –")
    assert cell[("teac", "Δ accuracy vs gold, pp (exact McNemar p)")][0].startswith("-50.0 (p = 0.5")
    success = "repair success: no drift after repair and correct (vs y*)"
    assert cell[("gold", success)][0] == "1 of 2 targets (50.0 %)"
    assert cell[("teac", success)][0] == "0 of 3 targets (0.0 %)"
    unrun = table23(s1, labels, agree, labels, None, {"gold": 10, "predicted": 9}, reported("table23"))
    assert list(unrun["this run"].tail(2)) == ["not run", "not run"]
    assert list(t["stage"].unique()) == ["Distillation (Stage I)", "Audit (Stage II)", "Repair (Stage III)"]
