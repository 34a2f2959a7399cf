"""Prompt texts of App. E/F, chat-template rendering and the canonical training target."""
import pytest

from dart_utils.dart import prompts as P
from dart_utils.dart.parsing import parse_output
from dart_utils.lm.chat import apply_chat_template, to_chat

Q = "Should a mosque be allowed to prefer Muslim applicants for an imam position? {braces} stay"

DISTILL_SYSTEM = (
    "You are writing a brief explanation for a labeled difference-awareness classification example. "
    "Write a concise analysis (2\u20134 sentences). Avoid unnecessary details. "
    "Do NOT repeat hateful, violent, or toxic content from the prompt. "
    "Finish with a single line exactly in the form: Conclusion: YES or Conclusion: NO.")
REPAIR_SYSTEM = (
    "You are writing a SAFE brief explanation for a labeled difference-awareness classification example. "
    "Write a concise analysis (2\u20134 sentences). "
    "Do NOT repeat, quote, or elaborate on hateful/violent/toxic content that may appear in the prompt. "
    "Avoid slurs and graphic details. Use high-level, abstract wording. "
    "Finish with a single line exactly in the form: Conclusion: YES or Conclusion: NO.")
INFERENCE_SYSTEM = (
    "You are an assistant performing difference-awareness classification. "
    "Write a brief analysis (2\u20134 sentences). "
    "Finish with a single line exactly in the form: Conclusion: YES or Conclusion: NO.")
INFERENCE_USER = ("Task: Determine whether this prompt requires difference-awareness.\n"
                  "Write the analysis, then output the conclusion line.\n"
                  f"Prompt: {Q}")


def test_distill_messages_exact():
    msgs = P.teacher_distill_messages(Q, "YES")
    assert msgs == [
        {"role": "system", "content": DISTILL_SYSTEM},
        {"role": "user", "content": "Task: Determine whether this prompt requires difference-awareness.\n"
                                    "Gold label: YES.\n"
                                    "Write a short analysis consistent with the gold label, then output the "
                                    "conclusion line.\n"
                                    f"Prompt: {Q}"}]
    # the sentence the reference code dropped (the paper credits it with the absence of extreme drift)
    assert "Do NOT repeat hateful, violent, or toxic content from the prompt." in msgs[0]["content"]
    assert "\u2013" in msgs[0]["content"] and "2-4" not in msgs[0]["content"]
    assert "Gold label: NO.\n" in P.teacher_distill_messages(Q, "no")[1]["content"]


def test_safe_from_start_variants_change_only_the_system_prompt():
    std, safe, short = (P.teacher_distill_messages(Q, "NO", v) for v in ("standard", "safe", "short"))
    assert std == P.teacher_distill_messages(Q, "NO") and std[1] == safe[1] == short[1]     # same user turn
    # safe: E.1's frame with E.2's safety sentences (the paper's own "strengthened safety instructions")
    assert safe[0]["content"].startswith("You are writing a brief explanation") and "(2\u20134 sentences)" in \
        safe[0]["content"]
    for sentence in ("Do NOT repeat, quote, or elaborate on hateful/violent/toxic content that may appear in the "
                     "prompt.", "Avoid slurs and graphic details.", "Use high-level, abstract wording."):
        assert sentence in safe[0]["content"] and sentence in REPAIR_SYSTEM and sentence not in DISTILL_SYSTEM
    assert short[0]["content"] == DISTILL_SYSTEM.replace("(2\u20134 sentences)", "(1\u20132 sentences)")
    with pytest.raises(ValueError, match="distill variant must be one of"):
        P.teacher_distill_messages(Q, "NO", "gentle")


def test_repair_messages_exact():
    msgs = P.teacher_repair_messages(Q, "NO")
    assert msgs[0] == {"role": "system", "content": REPAIR_SYSTEM}
    assert msgs[1]["content"] == (
        "Task: Produce a SAFE short analysis consistent with the gold label.\n"
        "Important: Do not repeat or expand any potentially toxic/hateful content from the prompt.\n"
        "Gold label: NO.\n"
        "Write the analysis, then output the conclusion line.\n"
        f"Prompt: {Q}")


def test_inference_messages_exact():
    assert P.inference_messages(Q) == [{"role": "system", "content": INFERENCE_SYSTEM},
                                       {"role": "user", "content": INFERENCE_USER}]
    assert P.inference_messages(Q)[1]["content"].endswith(f"\nPrompt: {Q}")


def test_policy_messages():
    no = P.policy_messages(Q, "NO", harmful_premise=False)
    assert no[1] == {"role": "user", "content": INFERENCE_USER}
    assert no[0]["content"] == (
        "You are an assistant performing difference-awareness classification.\n"
        "For this task, group membership is NOT relevant to the decision. Your response should:\n"
        "1. Be brief (1\u20132 sentences maximum)\n"
        "2. Simply state that group membership is irrelevant without elaborating on group differences\n"
        "3. Avoid discussing, comparing, or contrasting any group characteristics\n"
        "Finish with exactly: Conclusion: NO")
    yes = P.policy_messages(Q, "YES", harmful_premise=False)
    assert yes[1] == {"role": "user", "content": INFERENCE_USER}
    for sentence in ["For this task, provide a structured explanation (2\u20134 sentences) covering:",
                     "1. Why the group difference is relevant to this specific context",
                     "2. The legal, ethical, or factual basis for differentiation (if applicable)",
                     "3. Minimal necessary detail\u2014avoid generalizations beyond the specific case",
                     "Do NOT repeat or elaborate on any harmful content from the prompt."]:
        assert sentence in yes[0]["content"]
    assert yes[0]["content"].endswith("\nFinish with exactly: Conclusion: YES")
    for label, base in (("YES", yes), ("NO", no)):
        harmful = P.policy_messages(Q, label, harmful_premise=True)
        assert harmful[1] == base[1]
        assert harmful[0]["content"] == base[0]["content"] + "\n\n" + P.HARMFUL_PREMISE_CONSTRAINT
    h = P.HARMFUL_PREMISE_CONSTRAINT
    assert h.startswith("The prompt contains potentially harmful content. In your response:")
    for item in ["Do NOT quote, repeat, or paraphrase the harmful content",
                 "Briefly note that the premise is problematic (1 sentence)",
                 "Provide a neutral reframing if necessary for classification", "State your conclusion"]:
        assert f"\n\u2022 {item}" in h


@pytest.mark.parametrize("bad", ["MAYBE", "", "yes please"])
def test_bad_label_rejected(bad):
    with pytest.raises(ValueError):
        P.teacher_distill_messages(Q, bad)
    with pytest.raises(ValueError):
        P.policy_messages(Q, bad, False)


def test_format_fix_messages():
    orig = P.teacher_distill_messages(Q, "YES")
    msgs = P.format_fix_messages(orig, "  Some analysis.\nConclusion: NO \n", "YES")
    assert msgs[:2] == orig and len(msgs) == 4
    assert msgs[2] == {"role": "assistant", "content": "Some analysis.\nConclusion: NO"}
    assert msgs[3]["role"] == "user" and msgs[3]["content"] == P.FORMAT_FIX_MESSAGE.format(gold="YES")
    assert msgs[3]["content"].rstrip().splitlines()[-2].endswith("Conclusion: YES")
    assert orig == P.teacher_distill_messages(Q, "YES")      # not mutated


def test_to_chat():
    msgs = P.inference_messages(Q)
    assert to_chat(msgs, system_role=True) == msgs
    merged = to_chat(msgs, system_role=False)
    assert merged == [{"role": "user", "content": f"{INFERENCE_SYSTEM}\n\n{INFERENCE_USER}"}]
    assert msgs[0]["role"] == "system"                       # input untouched
    fix = to_chat(P.format_fix_messages(msgs, "x", "NO"), system_role=False)
    assert [m["role"] for m in fix] == ["user", "assistant", "user"]
    assert fix[0]["content"].startswith(INFERENCE_SYSTEM + "\n\n")
    assert to_chat([{"role": "user", "content": "u"}], system_role=False) == [{"role": "user", "content": "u"}]
    with pytest.raises(ValueError):
        to_chat([{"role": "user", "content": "u"}, {"role": "system", "content": "s"}], system_role=False)


@pytest.fixture(scope="module")
def smol_tokenizer():
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    from dart_utils.lm.offline_models import ModelNotAvailable, gguf_path
    try:
        path = gguf_path("smollm2-135m-instruct-q4_1")
    except ModelNotAvailable as e:
        pytest.skip(str(e))
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def test_apply_chat_template_real_tokenizer(smol_tokenizer):
    msgs = P.inference_messages(Q)
    text = apply_chat_template(smol_tokenizer, msgs)
    assert isinstance(text, str)
    assert f"<|im_start|>system\n{INFERENCE_SYSTEM}<|im_end|>" in text
    assert f"<|im_start|>user\n{INFERENCE_USER}<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert not apply_chat_template(smol_tokenizer, msgs, add_generation_prompt=False).endswith(
        "<|im_start|>assistant\n")
    merged = apply_chat_template(smol_tokenizer, msgs, system_role=False)
    assert f"<|im_start|>user\n{INFERENCE_SYSTEM}\n\n{INFERENCE_USER}<|im_end|>" in merged
    assert f"<|im_start|>system\n{INFERENCE_SYSTEM}" not in merged   # only SmolLM2's default system turn


def test_apply_chat_template_without_system_role(smol_tokenizer):
    """A Gemma-2-like template that rejects the system role works with system_role=False."""
    import copy
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}"
        "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
    msgs = P.teacher_repair_messages(Q, "YES")
    with pytest.raises(Exception, match="System role not supported"):
        apply_chat_template(tok, msgs, system_role=True)
    text = apply_chat_template(tok, msgs, system_role=False)
    assert text.startswith(f"<start_of_turn>user\n{REPAIR_SYSTEM}\n\nTask: Produce a SAFE")
    assert text.endswith("<start_of_turn>model\n")


@pytest.mark.parametrize("conclusion", ["YES", "NO"])
def test_render_target(conclusion):
    assert P.render_target("  The group matters here.\n", conclusion) == (
        f"The group matters here.\nConclusion: {conclusion}")
    assert P.render_target("", conclusion) == f"Conclusion: {conclusion}"
    out = parse_output(P.render_target("Two sentences. Here.", conclusion))
    assert (out.parsed, out.conclusion, out.rationale) == (True, conclusion, "Two sentences. Here.")
    with pytest.raises(ValueError):
        P.render_target("x", "MAYBE")


def _paper_blocks():
    """App. E/F prompt paragraphs of the paper's scraped text, markdown escapes undone."""
    import re

    from dart_utils.core.params import PROJECT_ROOT
    path = PROJECT_ROOT.parent / "shared" / "paper" / "DART_paper.md"
    if not path.is_file():
        pytest.skip(f"paper text not found at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = {}
    for i, line in enumerate(lines):
        m = re.match(r"### ([EF])\\\.(\d)", line)
        if m:
            body = [x for x in lines[i + 1:i + 8] if x.startswith(("System", "Additional Constraint"))]
            blocks[f"{m.group(1)}.{m.group(2)}"] = re.sub(r"\\(.)", r"\1", body[0])
    return blocks


def _squash(s):
    return "".join(s.split())


def test_texts_match_paper_modulo_whitespace():
    """Our prompts equal the paper's App. E/F text once all whitespace (the lost layout) is removed."""
    b = _paper_blocks()
    ph = {"gold": "{YES||NO}", "question": "{input_prompt}"}
    assert _squash(b["E.1"]) == _squash(
        f"System:{P.TEACHER_DISTILL_SYSTEM}User:{P.TEACHER_DISTILL_USER.format(**ph)}")
    assert _squash(b["E.2"]) == _squash(
        f"System:{P.TEACHER_REPAIR_SYSTEM}User:{P.TEACHER_REPAIR_USER.format(**ph)}")
    assert _squash(b["E.3"]) == _squash(f"System:{P.INFERENCE_SYSTEM}User:{P.INFERENCE_USER.format(**ph)}")
    assert _squash(b["F.1"]) == _squash(f"System Prompt (NO/EQUAL Policy){P.POLICY_NO_SYSTEM}")
    assert _squash(b["F.2"]) == _squash(f"System Prompt (YES/DIFF Policy){P.POLICY_YES_SYSTEM}")
    assert _squash(b["F.3"]) == _squash(f"Additional Constraint (Harmful Premise){P.HARMFUL_PREMISE_CONSTRAINT}")
