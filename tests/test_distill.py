"""Teacher-target validation and the format-fix control flow (the real teacher runs in test_pipeline)."""

import pytest

from dart_utils.core import params as P
from dart_utils.dart import distill, prompts
from dart_utils.lm.llm import LLMResponse


def reply(text, cache_key="k", **kw):
    """A real LLMResponse as the scripted clients return it."""
    return LLMResponse(text, "stop", cache_key=cache_key, **kw)

DP = P.load("cpu").distill


@pytest.mark.parametrize("text,n", [
    ("One. Two. Three.", 3),
    ("Men are e.g. overrepresented vs. women in this job. So yes.", 2),
    ("Rates differ by 12.5 percent. A second point!", 2),
    ("", 0),
    ("No terminal punctuation", 1),
])
def test_count_sentences(text, n):
    assert distill.count_sentences(text) == n


def test_validate_target():
    good = "The groups differ here. Law allows it.\nConclusion: YES"
    fields, reasons = distill.validate_target(good, "YES", DP)
    assert reasons == [] and fields["target"] == prompts.render_target("The groups differ here. Law allows it.", "YES")
    assert distill.validate_target(good, "NO", DP)[1] == ["wrong_conclusion:YES"]
    assert distill.validate_target("Just one sentence.\nConclusion: YES", "YES", DP)[1] == ["sentences:1"]
    assert distill.validate_target("A. B. C. D. E.\nConclusion: NO", "NO", DP)[1] == ["sentences:5"]
    assert distill.validate_target("It differs. Truly.", "YES", DP)[1] == ["unparsed:no_conclusion"]
    # a rationale that states the other label is rejected even though its conclusion line is the gold one
    assert distill.validate_target("Groups are alike here. Therefore, the conclusion is: YES.\nConclusion: NO",
                                   "NO", DP)[1] == ["rationale_states:YES"]
    assert distill.validate_target("Groups are alike here. So the answer is NO.\nConclusion: NO", "NO", DP)[1] == []


def test_inline_label():
    assert distill.inline_label("Therefore, the conclusion is: NO.") == "NO"
    assert distill.inline_label('The answer is YES. Later the label should be "NO".') == "NO"  # the last one
    assert distill.inline_label("Yes, groups differ. No doubt.") is None
    assert distill.inline_label("") is None



class ScriptedTeacher:
    """Answers each conversation by its length (round) from a script: a stand-in to test the control flow only."""

    def __init__(self, script):
        self.script, self.cfg, self.seen, self.descs = script, P.load("ci").teacher, [], []

    def chat_many(self, batch, desc=""):
        self.seen.append(batch)
        self.descs.append(desc)
        return [reply(self.script[m[1]["content"].rsplit("Prompt: ", 1)[1]][(len(m) - 2) // 2]) for m in batch]


ROWS = [{"id": f"X-{i}", "benchmark": "D1", "category": "descriptive", "condition": c, "gold": g, "question": q}
        for i, (c, g, q) in enumerate([("DIFF", "YES", "q-good"), ("EQUAL", "NO", "q-missing-line"),
                                        ("EQUAL", "NO", "q-wrong"), ("DIFF", "YES", "q-bare"),
                                        ("EQUAL", "NO", "q-contradicts")])]
SCRIPT = {
    "q-good": ["Groups differ. It matters.\nConclusion: YES"],
    "q-missing-line": ["No group matters here. Treat them alike. Therefore the conclusion is NO.", "Conclusion: NO"],
    "q-wrong": ["They differ. A lot.\nConclusion: YES", "Still differ. Truly.\nConclusion: YES",
                "Still. Differ.\nConclusion: YES"],
    "q-bare": ["Persecution is documented. It applies here.", "YES"],
    # argues NO, then states YES inline: asking for the line alone would copy YES, so it gets the full rewrite
    "q-contradicts": ["No difference is needed here. Groups are alike. The conclusion is: YES.",
                      "Groups are alike here. No difference is needed.\nConclusion: NO"],
}


def test_distill_rounds_merge_and_rejections():
    teacher = ScriptedTeacher(SCRIPT)
    result = distill.distill_targets(ROWS, teacher, DP)
    accepted = {r["id"]: r for r in result.accepted}
    assert set(accepted) == {"X-0", "X-1", "X-3", "X-4"} and result.acceptance_rate == 0.8
    assert accepted["X-0"]["rounds_used"] == 0
    assert accepted["X-1"]["target"] == ("No group matters here. Treat them alike. Therefore the conclusion is NO."
                                         "\nConclusion: NO")
    assert accepted["X-3"]["target"].endswith("It applies here.\nConclusion: YES")
    [rejected] = result.rejected
    assert rejected["id"] == "X-2" and rejected["reasons"] == [["wrong_conclusion:YES"]] * 3
    # a missing conclusion line gets the narrow follow-up; a wrong conclusion gets the full rewrite with the gold label
    round1 = {m[1]["content"].rsplit("Prompt: ", 1)[1]: m[-1]["content"] for m in teacher.seen[1]}
    assert round1["q-missing-line"] == prompts.CONCLUSION_ONLY_MESSAGE
    assert "Conclusion: NO" in round1["q-wrong"] and "Rewrite" in round1["q-wrong"]
    assert round1["q-contradicts"] == prompts.FORMAT_FIX_MESSAGE.format(gold="NO")
    assert accepted["X-4"]["target"] == "Groups are alike here. No difference is needed.\nConclusion: NO"
    assert len(teacher.seen) == 3 and len(teacher.seen[2]) == 1  # only the still-failing item goes on
    assert teacher.descs == ["teacher round 0", "teacher round 1", "teacher round 2"]
    assert teacher.seen[0] == [prompts.teacher_distill_messages(r["question"], r["gold"]) for r in ROWS]
    assert accepted["X-1"]["cache_keys"] == ["k", "k"] and accepted["X-1"]["raw_text"] == "Conclusion: NO"
    table = distill.acceptance_table(result)
    assert table["n"].sum() == 5 and table.attrs["final_rejection_reasons"] == {"wrong_conclusion": 1}


def test_sft_dataset_never_shows_the_gold_label():
    targets = [{"id": "a", "question": "Which group?", "target": "Because.\nConclusion: NO"}]
    ds = distill.sft_dataset(targets, system_role=True)
    prompt = ds[0]["prompt"]
    assert [m["role"] for m in prompt] == ["system", "user"] and "Gold label" not in prompt[1]["content"]
    assert prompt == prompts.inference_messages("Which group?")
    assert ds[0]["completion"] == [{"role": "assistant", "content": "Because.\nConclusion: NO"}]
    merged = distill.sft_dataset(targets, system_role=False)[0]["prompt"]
    assert [m["role"] for m in merged] == ["user"] and merged[0]["content"].startswith(prompts.INFERENCE_SYSTEM)


def test_balance_labels_keeps_the_rarer_label_and_as_many_of_the_other():
    targets = [{"id": f"t{i}", "gold": "YES" if i % 3 else "NO"} for i in range(30)]   # 10 NO : 20 YES
    kept, dropped = distill.balance_labels(targets, seed=42)
    assert sum(t["gold"] == "NO" for t in kept) == sum(t["gold"] == "YES" for t in kept) == 10
    assert len(dropped) == 10 and {t["gold"] for t in dropped} == {"YES"}
    assert sorted(t["id"] for t in kept + dropped) == sorted(t["id"] for t in targets)   # nothing lost
    order = [t["id"] for t in targets]
    assert [order.index(t["id"]) for t in kept] == sorted(order.index(t["id"]) for t in kept)   # original order
    assert distill.balance_labels(targets, seed=42) == (kept, dropped)                  # 01 and 03 agree
    assert distill.balance_labels(targets, seed=7)[0] != kept
    assert distill.balance_labels(kept, seed=1) == (kept, [])                           # already balanced


def test_balance_labels_with_one_label_says_what_to_do():
    with pytest.raises(ValueError, match="all 2 accepted targets have gold label NO.*balance_labels: false"):
        distill.balance_labels([{"id": "a", "gold": "NO"}, {"id": "b", "gold": "no"}], seed=0)
