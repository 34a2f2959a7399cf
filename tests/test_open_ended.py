"""Open-ended transfer (App. I.1, Table 14): the data loader, the judge's strict parsing and control flow (scripted
clients), the both-orders pairwise rule, Table 14's rates and tests, the blinded sheet. The real student and judge
run in notebook 12 (test_pipeline runs it under `ci`)."""
import json
import shutil

import pandas as pd
import pytest

from dart_utils.analysis import open_ended as tables
from dart_utils.core import params as P
from dart_utils.dart import open_ended as oe
from dart_utils.data import open_ended as data
from dart_utils.data.suite import DataError
from dart_utils.lm.llm import LLMResponse

DIR = data.open_ended_dir(P.load("ci").open_ended)


def test_load_queries_checks_checksum_count_and_schema(tmp_path):
    ds = data.load_queries(DIR)
    assert len(ds) == 280 and set(ds["domain"]) == set(data.DOMAINS)
    assert sum(ds["harmful_premise"]) == 64 and sum(ds["demographics_relevant"]) == 140   # SOURCE.md's counts
    assert "## 4. Pairwise preference" in data.load_rubric(DIR)
    bad = tmp_path / "oe"
    shutil.copytree(DIR, bad)
    (bad / "queries.jsonl").chmod(0o644)
    lines = (bad / "queries.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec["harmful_premise"] = "yes"
    (bad / "queries.jsonl").write_text("\n".join([lines[0], json.dumps(rec), *lines[2:]]) + "\n")
    with pytest.raises(DataError, match="checksum mismatch"):
        data.load_queries(bad)
    with pytest.raises(DataError, match=r"queries.jsonl:2: key 'harmful_premise' must be a non-empty bool"):
        data.load_queries(bad, verify=False)


def test_sample_is_stratified_and_seeded():
    ds = data.load_queries(DIR)
    s = data.sample(ds, 40, seed=42)
    assert len(s) == 40 and pd.Series(s["domain"]).value_counts().to_dict() == {d: 10 for d in data.DOMAINS}
    assert list(s["id"]) == list(data.sample(ds, 40, seed=42)["id"])
    assert data.sample(ds, None, 42) is ds
    with pytest.raises(ValueError, match="open_ended.n"):
        data.sample(ds, 0, 42)


def test_rubric_sections_go_into_the_judge_prompts():
    rubric = data.load_rubric(DIR)
    point, pair = oe.pointwise_system(rubric), oe.pairwise_system(rubric)
    assert "## 1. Difference-appropriate" in point and "## 3. Harmful premise handled" in point
    assert "## 4. Pairwise preference" not in point and "## 4. Pairwise preference" in pair
    with pytest.raises(ValueError, match="expected one section"):
        oe.pointwise_system("# no sections here")


def _v(**kw):
    v = {"difference_appropriate": True, "refusal": False, "harmful_premise_handled": None, "rationale": "r"}
    return json.dumps(v | kw)


@pytest.mark.parametrize("text,hp,expect", [
    (_v(), False, dict),
    (_v(harmful_premise_handled=True), True, dict),
    ("```json\n" + _v() + "\n```", False, dict),
    ("no json", False, "no_json"),
    (json.dumps({"refusal": False}), False, "missing_keys"),
    (_v(difference_appropriate="true"), False, "not_boolean"),
    (_v(), True, "premise"),                                              # premise item needs true/false
    (_v(harmful_premise_handled=False), False, "premise"),               # non-premise item needs null
    (_v(refusal=True), False, "inconsistent"),                           # a refusal is never appropriate
    (_v(refusal=True, difference_appropriate=False, harmful_premise_handled=True), True, "inconsistent"),
])
def test_parse_pointwise(text, hp, expect):
    got = oe.parse_pointwise(text, hp)
    assert isinstance(got, dict) if expect is dict else got.startswith(expect)


class Scripted:
    """Replies by round from a per-response script (keyed by the response text); records every request."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def chat_many(self, batch, desc="", **kw):
        out = []
        for m in batch:
            self.calls.append((desc, kw, m))
            user = m[1]["content"]
            if "Response A:" in user:
                a = user.split("Response A:\n<<<\n", 1)[1].split("\n>>>", 1)[0]
                b = user.split("Response B:\n<<<\n", 1)[1].split("\n>>>", 1)[0]
                text = self.script[(a, b)]
            else:
                resp = user.split("Response:\n<<<\n", 1)[1].split("\n>>>", 1)[0]
                text = self.script[resp][(len(m) - 2) // 2]
            out.append(LLMResponse(text, "stop", cache_key=f"k{len(self.calls)}"))
        return out


ITEMS = [{"id": "med-001", "domain": "medical", "prompt": "q1", "demographics_relevant": False,
          "harmful_premise": True, "appropriate_answer": "ref1", "groups": ["g"]},
         {"id": "leg-001", "domain": "legal", "prompt": "q2", "demographics_relevant": True,
          "harmful_premise": False, "appropriate_answer": "ref2", "groups": ["h"]}]


def test_judge_answers_retries_then_counts_a_failure():
    rubric = data.load_rubric(DIR)
    client = Scripted({"good": [_v(harmful_premise_handled=True)],
                       "bad": ["not json", _v(refusal=True)]})          # both replies invalid -> failure
    recs = oe.judge_answers(ITEMS, ["good", "bad"], client, rubric, retries=1, max_tokens=99)
    assert [r["status"] for r in recs] == ["ok", "failed"]
    assert recs[0]["harmful_premise_handled"] is True and recs[1]["difference_appropriate"] is None
    assert recs[1]["error"].startswith("inconsistent") and recs[1]["rounds_used"] == 1
    assert all(kw == {"max_tokens": 99} for _, kw, _ in client.calls) and len(client.calls) == 3
    assert "Reference" in client.calls[0][2][1]["content"] and "ref1" in client.calls[0][2][1]["content"]


def test_pairwise_needs_both_orders_for_a_win():
    rubric = data.load_rubric(DIR)
    pref = lambda p: json.dumps({"preferred": p, "rationale": "r"})  
    items = ITEMS + [{**ITEMS[1], "id": "pol-001"}, {**ITEMS[1], "id": "edu-001"}]
    first, second = ["d1", "d2", "d3", "d4"], ["z1", "z2", "z3", "z4"]
    client = Scripted({("d1", "z1"): pref("A"), ("z1", "d1"): pref("B"),      # win: preferred in both orders
                       ("d2", "z2"): pref("A"), ("z2", "d2"): pref("A"),      # position bias -> tie
                       ("d3", "z3"): pref("B"), ("z3", "d3"): pref("A"),      # loss
                       ("d4", "z4"): "garbage", ("z4", "d4"): pref("tie")})   # an order fails -> failure
    out = oe.pairwise_judge(items, first, second, client, rubric, retries=0)
    assert [o["outcome"] for o in out] == ["win", "tie", "loss", "failure"]
    wt = tables.win_table(items, out, n_resamples=200)
    overall = wt[wt["domain"] == "overall"].iloc[0]
    assert (overall["judged"], overall["wins"], overall["ties"], overall["losses"], overall["failures"]) == (3, 1, 1, 1, 1)
    assert overall["win rate %"] == pytest.approx(33.3) and overall["(wins + ties/2) %"] == 50.0
    assert overall["paper win rate %"] == 82.1


def test_table14_rates_failures_and_paired_test():
    items = [{"id": f"med-{i:03d}", "domain": "medical", "demographics_relevant": True, "harmful_premise": i < 4}
             for i in range(10)]
    ok = lambda da, hp=None: {"status": "ok", "difference_appropriate": da, "refusal": not da,
                              "harmful_premise_handled": hp}
    m0 = [{"id": it["id"], **ok(False, False if it["harmful_premise"] else None)} for it in items]
    m_dart = [{"id": it["id"], **ok(True, True if it["harmful_premise"] else None)} for it in items]
    m_dart[9] = {"id": items[9]["id"], "status": "failed", **{k: None for k in oe.MEASURES}}
    df = tables.judged_frame(items, {"m0": m0, "m_dart": m_dart})
    t = tables.table14(df, models=("m0", "m_dart"), n_resamples=200)
    row = t[(t["domain"] == "overall") & (t["measure"] == "difference_appropriate")].iloc[0]
    assert row["m0"].startswith("0.0") and row["m_dart"].startswith("100.0") and row["m_dart failures"] == 1
    assert row["paired n"] == 9 and row["Δ m_dart−m0 (pp)"] == 100.0
    assert row["McNemar p"] == pytest.approx(2 * 0.5 ** 9)                  # 9 discordant, all one way
    assert (row["paper M0"], row["paper M_DART"]) == (39.8, 77.5)
    hp = t[(t["domain"] == "overall") & (t["measure"] == "harmful_premise_handled")].iloc[0]
    assert hp["items"] == 4 and hp["paired n"] == 4
    legal = t[(t["domain"] == "legal") & (t["measure"] == "refusal")].iloc[0]
    assert legal["items"] == 0 and legal["m0"] == "–"


def test_two_pass_falls_back_without_a_label():
    out = oe.two_pass_answers(["off a", "off b"], ["YES", None], {0: "policy a"})
    assert out == [{"text": "policy a", "policy_label": "YES", "fallback": False},
                   {"text": "off b", "policy_label": None, "fallback": True}]
    msgs = oe.policy_answer_messages("q", "NO", True)
    assert "NOT relevant" in msgs[0]["content"] and oe.OPEN_PREMISE_CONSTRAINT in msgs[0]["content"]
    assert "Conclusion" not in msgs[0]["content"]                        # an answer, not a label


def test_annotation_sheet_is_blind_and_agreement_is_scored():
    answers = {"m0": ["a0", "b0"], "m_dart": ["a1", "b1"]}
    judged = {m: [{"status": "ok", "difference_appropriate": m == "m_dart", "refusal": False,
                   "harmful_premise_handled": None} for _ in range(2)] for m in answers}
    sheet, key = oe.export_annotation_sheet(ITEMS, answers, judged, n=4, seed=1)
    assert len(sheet) == 4 and "model" not in sheet.columns and set(key["model"]) == {"m0", "m_dart"}
    filled = sheet.copy()
    filled["difference_appropriate"] = key["model"].eq("m_dart").map({True: "true", False: "false"})
    filled["refusal"] = "false"
    agree = oe.human_agreement(filled, key).set_index("measure")
    assert agree.loc["difference_appropriate", "agreement %"] == 100.0
    assert agree.loc["difference_appropriate", "cohen kappa"] == pytest.approx(1.0)
    assert agree.loc["harmful_premise_handled", "n"] == 0                   # blank on non-premise items
    with pytest.raises(ValueError, match="lacks columns"):
        oe.human_agreement(filled.drop(columns=["refusal"]), key)
