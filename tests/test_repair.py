"""Repair-target filter (label, H(r_safe) < H(r_int), parse), retries, oversampling after de-duplication, Stage III
dataset."""

import pandas as pd
import pytest

from dart_utils.dart import audit, prompts, repair
from dart_utils.lm.llm import LLMResponse


def reply(text, cache_key="k", **kw):
    """A real LLMResponse as the scripted clients return it."""
    return LLMResponse(text, "stop", cache_key=cache_key, **kw)



class ScriptedTeacher:
    """Answers each question's k-th request with script[question][k] (control flow only)."""

    def __init__(self, script):
        self.script, self.seen, self.asked, self.descs = script, [], {}, []

    def chat_many(self, batch, desc=""):
        self.seen.append(batch)
        self.descs.append(desc)
        out = []
        for m in batch:
            q = m[1]["content"].rsplit("Prompt: ", 1)[1]
            k = self.asked[q] = self.asked.get(q, -1) + 1
            out.append(reply(self.script[q][k], cache_key=f"{q}-{k}"))
        return out


class Scorer:
    """Deterministic harm score: 0.1 per occurrence of "bad"; records what it was asked to score."""

    def __init__(self):
        self.calls = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return [0.1 * t.lower().count("bad") for t in texts]


SCRIPT = {
    "q-good": ["Group membership is irrelevant here. Treat everyone alike.\nConclusion: NO"],
    "q-wrong": ["Groups differ. Truly.\nConclusion: YES"] * 3,
    "q-unparsed": ["I am not sure how to answer this.", "Still unsure about this one.", "No idea at all."],
    "q-notsafer": ["Bad people are bad. Bad.\nConclusion: NO", "They are bad and bad.\nConclusion: NO",
                   "Bad bad.\nConclusion: NO"],
    "q-fixed": ["This is bad and bad.\nConclusion: NO", "Groups are treated the same. It is fair.\nConclusion: NO"],
    "q-tie": ["One bad point. Another.\nConclusion: NO"] * 3,
    "q-missing-line": ["Religion is irrelevant to the job. Merit decides.", "NO"],
}


def case(i, q, sev="severe", h=0.15):
    return {"id": f"R-{i}", "benchmark": "N1", "question": q, "gold": "NO", "severity": sev, "h_candidate": h,
            "kind": "novel"}


def test_repair_filter_and_drop_reasons():
    cases = [case(0, "q-good"), case(1, "q-wrong"), case(2, "q-unparsed"), case(3, "q-notsafer"),
             case(4, "q-fixed", "mild"), case(5, "q-tie", h=0.1), case(6, "q-missing-line", "moderate")]
    teacher, scorer = ScriptedTeacher(SCRIPT), Scorer()
    res = repair.repair_targets(cases, teacher, scorer, retries=2)
    acc = {r["id"]: r for r in res.accepted}
    rej = {r["id"]: r for r in res.rejected}
    assert set(acc) == {"R-0", "R-4", "R-6"} and set(rej) == {"R-1", "R-2", "R-3", "R-5"}
    assert res.acceptance_rate == pytest.approx(3 / 7)
    assert acc["R-0"]["rounds_used"] == 0 and acc["R-0"]["h_safe"] == 0.0 and acc["R-0"]["h_int"] == 0.15
    assert acc["R-0"]["target"] == prompts.render_target(
        "Group membership is irrelevant here. Treat everyone alike.", "NO")
    assert acc["R-4"]["rounds_used"] == 1 and acc["R-4"]["severity"] == "mild"
    assert acc["R-6"]["target"] == "Religion is irrelevant to the job. Merit decides.\nConclusion: NO"
    assert rej["R-1"]["reasons"] == [["wrong_conclusion:YES"]] * 3
    assert rej["R-2"]["reasons"] == [["unparsed:no_conclusion"]] * 3
    assert all(r[0].startswith("not_safer:") for r in rej["R-3"]["reasons"])
    assert rej["R-5"]["reasons"][0] == ["not_safer:0.1>=0.1"]                # strict: a tie is not safer
    assert len(rej["R-1"]["cache_keys"]) == 3 and rej["R-3"]["h_safe"] == pytest.approx([0.3, 0.2, 0.2])
    # follow-ups: not-safer -> SAFER_FIX_MESSAGE, wrong label -> FORMAT_FIX_MESSAGE, missing line -> line only
    last_user = {m[1]["content"].rsplit("Prompt: ", 1)[1]: m[-1]["content"] for m in teacher.seen[1]}
    assert last_user["q-notsafer"] == repair.SAFER_FIX_MESSAGE.format(gold="NO")
    assert last_user["q-wrong"] == prompts.FORMAT_FIX_MESSAGE.format(gold="NO")
    assert last_user["q-missing-line"] == prompts.CONCLUSION_ONLY_MESSAGE
    assert teacher.seen[0][0] == prompts.teacher_repair_messages("q-good", "NO")
    # the scorer sees rationales only (no conclusion line), and only for parsed targets with the gold label
    scored = [t for call in scorer.calls for t in call]
    assert scored and not any("Conclusion" in t for t in scored)
    assert not any("Groups differ" in t for t in scored)
    # one scorer call per round, on every candidate of the round that passed the format and label checks
    assert teacher.descs == ["repair teacher round 0", "repair teacher round 1", "repair teacher round 2"]
    assert len(scorer.calls) == 3 and len(scorer.calls[0]) == 4       # in round 0
    assert rej["R-5"]["h_int"] == 0.1 and rej["R-3"]["raw_text"] == "Bad bad.\nConclusion: NO"
    drops = res.drop_table().set_index("severity")
    assert drops.loc["severe", "accepted"] == 1 and drops.loc["severe", "not_safer"] == 2
    assert drops.loc["severe", "wrong_conclusion"] == 1 and drops.loc["severe", "unparsed"] == 1


def test_repair_accepts_drift_pool_and_rejects_bad_input():
    recs = [{"id": "P-1", "benchmark": "D1", "gold": "NO", "question": "q-good", "h_m0": 0.0, "h_candidate": 0.2,
             "output_m0": "", "output_candidate": ""}]
    pool = audit.drift_pool(recs, [{"id": "P-1", "status": "ok", "candidate_worse": True, "severity": "moderate"}])
    res = repair.repair_targets(pool, ScriptedTeacher(SCRIPT), Scorer(), retries=0)
    assert [r["id"] for r in res.accepted] == ["P-1"] and res.accepted[0]["kind"] == "novel"
    assert res.accepted[0]["h_int"] == 0.2                             # the pool's h_candidate (H(r_int) in Stage II)
    with pytest.raises(ValueError, match="h_candidate"):
        repair.repair_targets([case(0, "q-good", h=float("nan"))], ScriptedTeacher(SCRIPT), Scorer())
    with pytest.raises(ValueError, match="severity"):
        repair.repair_targets([case(0, "q-good", sev="none")], ScriptedTeacher(SCRIPT), Scorer())
    with pytest.raises(ValueError, match="scores"):
        repair.repair_targets([case(0, "q-good")], ScriptedTeacher(SCRIPT), lambda texts: [])


def target(id_, sev, text=None):
    return {"id": id_, "severity": sev, "question": f"question {id_}", "gold": "NO",
            "target": text or f"Safe rationale for {id_}.\nConclusion: NO"}


def test_oversample_after_dedup():
    recs = [target("a", "mild"), target("b", "mild"), target("c", "severe"), target("a", "mild")]
    rows = repair.oversample(recs)
    assert len(rows) == 2 * 1 + 1 * 3 == 5                              # the duplicate is removed first
    assert [r["id"] for r in rows] == ["a", "b", "c", "c", "c"] and [r["copy"] for r in rows[2:]] == [0, 1, 2]
    assert repair.oversample_summary(rows).set_index("severity")["rows"].to_dict() == {"mild": 2, "severe": 3}
    assert len(repair.oversample(recs, uniform=True)) == 3
    assert len(repair.oversample(recs + [target("d", "moderate"), target("e", "extreme")])) == 5 + 2 + 4
    # a different target for the same id is a different example
    assert len(repair.oversample([target("a", "moderate"), target("a", "moderate", "Other.\nConclusion: NO")])) == 4
    assert len(repair.oversample(recs, weights={"mild": 2, "severe": 1})) == 5
    with pytest.raises(ValueError, match="no weight"):
        repair.oversample([target("x", "catastrophic")])
    assert repair.dedupe(recs)[1] == 1


def test_stage3_dataset_keeps_copies():
    distilled = [{"id": "s1", "question": "Stage one q?", "target": "Because.\nConclusion: YES"},
                 {"id": "s2", "question": "Stage one q2?", "target": "Since.\nConclusion: NO"}]
    weighted = repair.oversample([target("a", "mild"), target("b", "mild"), target("c", "severe"),
                                  target("a", "mild")])
    ds = repair.stage3_dataset(distilled, weighted, system_role=True)
    assert len(ds) == 2 + 5
    assert ds["source"] == ["distill"] * 2 + ["repair"] * 5 and ds["severity"][2:] == ["mild"] * 2 + ["severe"] * 3
    assert ds[4]["prompt"] == prompts.inference_messages("question c")
    assert ds[4]["completion"] == [{"role": "assistant", "content": "Safe rationale for c.\nConclusion: NO"}]
    assert all("Gold label" not in row["prompt"][-1]["content"] for row in ds)
    merged = repair.stage3_dataset(distilled, weighted, system_role=False)
    assert [m["role"] for m in merged[0]["prompt"]] == ["user"]
    with pytest.raises(ValueError, match="oversample"):
        repair.stage3_dataset(distilled, [target("a", "mild")], system_role=True)


def test_accuracy_by_repaired_keeps_items_apart():
    import pandas as pd
    base = {"benchmark": "N1", "category": "normative", "parsed": True}
    rows = [dict(base, id=f"I-{i}", gold="YES", condition="DIFF") for i in range(4)]
    m_int = pd.DataFrame([dict(r, prediction=p) for r, p in zip(rows, ["NO", "NO", "YES", "NO"])])
    m_dart = pd.DataFrame([dict(r, prediction=p) for r, p in zip(rows, ["YES", "YES", "YES", "NO"])])
    t = repair.accuracy_by_repaired({"m_int": m_int, "m_dart": m_dart}, ["I-0", "I-1"])
    got = {(r["items"], r["model"]): (r["n"], r["acc_overall"]) for _, r in t.iterrows()}
    assert got == {("repaired items", "m_int"): (2, 0.0), ("repaired items", "m_dart"): (2, 1.0),
                   ("non-repaired items", "m_int"): (2, 0.5), ("non-repaired items", "m_dart"): (2, 0.5)}


def test_ablation_table_changes_from_the_pool():
    before = [{"id": str(i), "severity": s} for i, s in enumerate(["severe"] * 4 + ["moderate"] * 2 + ["mild"] * 2)]
    results = {"weighted": {"metrics": {"acc_overall": 0.5, "acc_equal": 0.25},
                            "pool": [{"id": "0", "severity": "severe"}]},
               "uniform": {"metrics": {"acc_overall": 0.4, "acc_equal": 0.2},
                           "pool": [{"id": "0", "severity": "severe"}, {"id": "1", "severity": "severe"},
                                    {"id": "6", "severity": "mild"}]}}
    t = repair.ablation_table(results, before)
    ours = t[t["source"] == "this run"].set_index("strategy")
    assert ours.loc["weighted", ["remaining_total", "change_total_pct", "change_severe_pct"]].tolist() == [1, -87.5, -75.0]
    assert ours.loc["uniform", ["remaining_severe", "remaining_mild", "change_mild_pct"]].tolist() == [2, 1, -50.0]
    paper = t[t["source"] != "this run"].set_index("strategy")
    assert paper.loc["weighted", "remaining_total"] == 119 and paper.loc["uniform", "change_total_pct"] == -65.3


# ---- App. M.3 severity-label noise (Table 31) ------------------------------------------------------------------------
def _sev_records():
    levels = ["mild", "moderate", "severe", "extreme"]
    return [{"id": f"q{i:02d}", "severity": levels[i % 4], "target": f"t{i}"} for i in range(20)]


@pytest.mark.parametrize("mode", ["up", "down", "random"])
def test_perturb_severities_changes_the_stated_fraction_deterministically(mode):
    recs = _sev_records()
    out, log = repair.perturb_severities(recs, mode, 0.4, seed=7)
    assert recs == _sev_records()                                   # input untouched
    assert len(log) == 8 and len({x["id"] for x in log}) == 8       # round(0.4 x 20) distinct cases
    assert [r["severity_original"] for r in out] == [r["severity"] for r in recs]
    changed = {x["id"]: x["after"] for x in log}
    for r, o in zip(recs, out):
        assert o["severity"] == changed.get(r["id"], r["severity"])
    assert repair.perturb_severities(recs, mode, 0.4, seed=7) == (out, log)
    assert [x["id"] for x in repair.perturb_severities(recs, mode, 0.4, seed=8)[1]] != [x["id"] for x in log]
    assert repair.perturb_severities(recs, mode, 0.0, seed=7)[1] == []


def test_perturb_severities_shifts_one_level_and_stays_at_the_ends():
    recs = _sev_records()
    up = {x["before"]: x["after"] for x in repair.perturb_severities(recs, "up", 1.0, seed=0)[1]}
    down = {x["before"]: x["after"] for x in repair.perturb_severities(recs, "down", 1.0, seed=0)[1]}
    assert up == {"mild": "moderate", "moderate": "severe", "severe": "extreme", "extreme": "extreme"}
    assert down == {"mild": "mild", "moderate": "mild", "severe": "moderate", "extreme": "severe"}
    rand = repair.perturb_severities(recs * 10, "random", 1.0, seed=0)[1]           # ids repeat: one level per id
    assert len(rand) == 20 and {x["after"] for x in rand} <= {"mild", "moderate", "severe", "extreme"}
    assert len({x["after"] for x in rand}) > 1


def test_perturb_severities_rejects_bad_input():
    with pytest.raises(ValueError, match="mode"):
        repair.perturb_severities(_sev_records(), "sideways", 0.2, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        repair.perturb_severities(_sev_records(), "up", 1.5, seed=0)
    with pytest.raises(ValueError, match="q00"):
        repair.perturb_severities([{"id": "q00", "severity": "none", "target": "x"}], "up", 0.5, seed=0)


def test_noise_arms_parse_and_weight_the_perturbed_severities():
    assert repair.noise_arm("up_20") == ("up", 0.2) and repair.noise_arm("random_40") == ("random", 0.4)
    assert repair.noise_arm("down_100") == ("down", 1.0)
    for bad in ("up20", "sideways_20", "up_", "up_120", "up_-1"):
        with pytest.raises(ValueError, match="severity noise arm"):
            repair.noise_arm(bad)
    recs = [target(f"q{i}", "mild") for i in range(10)]                 # all mild: weight 1 each, 10 rows
    rows, log = repair.noisy_oversample(recs, "up_40", None, seed=3)
    assert len(log) == 4 and {x["after"] for x in log} == {"moderate"}
    assert len(rows) == 6 * 1 + 4 * 2                                   # the perturbed cases now weigh 2 (moderate)
    assert {r["id"] for r in rows if r["weight"] == 2} == {x["id"] for x in log}
    assert all(r["severity_original"] == "mild" for r in rows)
    assert repair.noisy_oversample(recs, "up_40", None, seed=3) == (rows, log)        # seeded
    down, _ = repair.noisy_oversample(recs, "down_40", None, seed=3)                  # mild stays mild
    assert len(down) == 10 and len(repair.stage3_dataset([], rows, True)) == 14


def test_noise_arm_names_are_validated_in_the_parameters():
    from dart_utils.core.params import ParamsError, load
    assert load("cpu").repair.severity_noise == [] and load("ci").repair.severity_noise == ["up_100"]
    assert load("paper").repair.severity_noise == ["up_20", "up_40", "down_20", "down_40", "random_20", "random_40"]
    with pytest.raises(ParamsError, match="repair.severity_noise"):
        load("ci", overrides={"repair": {"severity_noise": ["up-20"]}})


def test_table31_sets_each_arm_against_the_unperturbed_m_dart():
    m = lambda acc: {"acc_overall": acc, "acc_equal": acc / 2}
    pool = lambda k: [{"id": f"x{i}", "severity": "mild"} for i in range(k)]
    t = repair.table31({"none": {"metrics": m(0.6), "pool": pool(3), "tox": 0.1},
                        "up_20": {"metrics": m(0.55), "pool": pool(5), "tox": 0.2, "perturbed": 1},
                        "random_40": {"metrics": m(0.5), "pool": pool(2), "tox": 0.3, "perturbed": 2},
                        "uniform": {"metrics": m(0.58), "pool": pool(4), "tox": 0.2}})
    ours = t[t["source"] == "this run"].set_index("perturbation")
    assert list(ours.index) == ["None (original)", "+1 level (20%)", "Random (40%)", "Uniform weights"]
    assert pd.isna(ours.loc["None (original)", "Δ remaining"]) and ours.loc["+1 level (20%)", "Δ remaining"] == 2
    assert ours.loc["Random (40%)", "Δ remaining"] == -1 and ours.loc["Uniform weights", "remaining"] == 4
    assert ours.loc["Random (40%)", "cases perturbed"] == 2 and ours.loc["+1 level (20%)", "EQUAL"] == 0.275
    paper = t[t["source"] != "this run"].set_index("perturbation")
    assert paper.loc["None (original)", "remaining"] == 119 and paper.loc["Random (40%)", "Δ remaining"] == 27
    assert paper.loc["−1 level (20%)", "acc"] == 0.687 and paper.loc["Uniform weights", "Δ remaining"] == 32
    with pytest.raises(ValueError, match="none"):
        repair.table31({"up_20": {"metrics": m(0.5), "pool": []}})
