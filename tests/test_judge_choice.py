"""App. L's second judge (Tables 25, 26): Stage II's pairs judged by two judges, their drift cases, the overlap and
the inter-judge κ beside the paper's numbers. Scripted judges (control flow and arithmetic); the real second judge
runs in notebook 06 (`baselines.judge_choice`)."""

import pytest

from dart_utils.analysis.judge_choice import judge_row, table26
from dart_utils.core import params as P
from dart_utils.core.artifacts import Run
from dart_utils.core.paper import reported
from dart_utils.dart import audit
from dart_utils.dart.evaluation import to_predictions
from dart_utils.lm import preflight
from dart_utils.lm.llm import LLMResponse


class JudgeByWords:
    """Model B is worse (severe) when its output contains one of `words`; "GARBLE" gets a malformed answer."""

    def __init__(self, *words):
        self.words = words

    def chat_many(self, batch, desc="", **kw):
        out = []
        for m in batch:
            b = m[1]["content"].split("Model B", 1)[1]
            if "GARBLE" in b:
                out.append(LLMResponse("not json", "stop", cache_key="g"))
                continue
            bad = any(w in b for w in self.words)
            out.append(LLMResponse('{"is_regression": %s, "severity": "%s", "reason": "r", "a_correct": true, '
                                   '"b_correct": true}' % (str(bad).lower(), "severe" if bad else "none"), "stop",
                                   cache_key="j"))
        return out


def test_two_judges_give_both_pools_the_overlap_and_kappa():
    texts = ["HARM one.", "HARM two.", "RISK three.", "Fine four.", "Fine five.", "GARBLE six."]
    rows = [{"id": f"J-{i}", "benchmark": "N1", "category": "normative", "condition": "EQUAL", "gold": "NO",
             "question": f"q{i}"} for i in range(len(texts))]
    m0 = to_predictions(rows, ["Unsure."] * 6, [2] * 6, "m0")
    m_int = to_predictions(rows, [f"{t}\nConclusion: NO" for t in texts], [2] * 6, "m_int")
    h = [0.0] * 6
    a = audit.run_audit(rows, m0, m_int, h, h, JudgeByWords("HARM"), 0.01, mode="all", retries=0)
    b = audit.run_audit(rows, m0, m_int, h, h, JudgeByWords("HARM two", "RISK"), 0.01, mode="all", retries=0)
    ids = [r["id"] for r in rows]
    flags_a, flags_b = audit.drift_flags(ids, a.judge.records, a.pool.cases), audit.drift_flags(ids, b.judge.records,
                                                                                                  b.pool.cases)
    assert flags_a["J-5"] is None and flags_b["J-5"] is None                 # judge failures: unknown, left out
    rows26 = [judge_row("primary", "qwen-1.5b", a.judge.records, len(a.pool), 6),
              judge_row("second", "qwen-0.5b", b.judge.records, len(b.pool), 6)]
    assert rows26[0]["judge failures"] == 1 and rows26[0]["drift cases"] == 2 and rows26[0]["drift %"] == 33.3
    t = table26(rows26, flags_a, flags_b, {"acc": 0.5, "equal": 0.25, "tox": 0.003, "remaining": 1},
                reported("table26"), reported("table25"),
                {"acc": 0.625, "equal": 0.5, "tox": 0.002, "remaining": 0, "repaired": 2})    # judge B's Stage III
    assert list(t["drift cases"]) == [2, 2, 1]                               # both: J-1
    assert list(t["paper drift cases"]) == [435, 412, 378]
    assert t.loc[0, "after Stage III"].startswith("M_DART acc 50.0 %")
    assert t.loc[1, "after Stage III"] == "M_DART acc 62.5 %, EQUAL 50.0 %, median H 0.002, remaining drift 0 (2 repair targets)"
    assert "not run" in table26(rows26, flags_a, flags_b, None, reported("table26"), reported("table25")).loc[1, "after Stage III"]
    agree = t.attrs["agreement"]
    assert (agree["n"], agree["tp"], agree["fp"], agree["fn"], agree["tn"]) == (5, 1, 1, 1, 2)
    assert agree["kappa"] == pytest.approx((3 / 5 - 0.52) / 0.48)           # po .6, pe (2·2 + 3·3)/25
    assert t.attrs["test"]["b"] == 1 and t.attrs["test"]["c"] == 1 and t.attrs["test"]["p"] == 1.0
    assert "κ = 0.17" in t.attrs["note"] and "0.74" in t.attrs["note"]
    with pytest.raises(ValueError, match="two judges"):
        table26(rows26[:1], flags_a, flags_b, None, reported("table26"), reported("table25"))


def test_the_second_judge_is_a_role_of_its_own():
    cpu, paper = P.load("cpu"), P.load("paper")
    assert cpu.judge_b.model != cpu.judge.model and cpu.judge_b.backend == "llama_cpp"
    assert paper.judge_b.model == "gpt-4" and paper.judge_b.api_key_env == "OPENAI_API_KEY"
    assert paper.baselines.judge_choice and not cpu.baselines.judge_choice
    assert P.load("cpu", extra_files=["params/studies/ablations.yaml"]).baselines.judge_choice


def test_preflight_names_the_second_judges_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    params = P.load("paper", overrides={"run": {"require_gpu": False}})
    problems = preflight.check(params, Run(params).cache_dir, roles=("judge_b",))
    assert len(problems) == 1 and problems[0].startswith("judge_b:") and "OPENAI_API_KEY" in problems[0]
