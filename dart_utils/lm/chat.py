"""Chat templating shared by training and generation: one rule for templates without a system role.

Why: the student must see the same token sequence in training (trl's SFTTrainer) and at inference. Both go through
the tokenizer's own chat template; for templates without a system role (e.g. Gemma-2, `student.system_role: false`)
the system text is merged into the first user turn by `to_chat`, the only place that rule is written.
"""
from __future__ import annotations


def to_chat(messages: list[dict], system_role: bool = True) -> list[dict]:
    """Copies of `messages`; with system_role=False (templates without a system role, e.g. Gemma-2) the leading
    system message(s) are merged into the first user turn as "{system}\\n\\n{user}"."""
    out = [dict(m) for m in messages]
    if system_role:
        return out
    systems = []
    while out and out[0]["role"] == "system":
        systems.append(out.pop(0)["content"])
    if any(m["role"] == "system" for m in out):
        raise ValueError("a system message after the first non-system message cannot be merged")
    if systems:
        system = "\n\n".join(systems)
        if out and out[0]["role"] == "user":
            out[0]["content"] = f"{system}\n\n{out[0]['content']}"
        else:
            out.insert(0, {"role": "user", "content": system})
    return out


def merge_system(messages: list[dict]) -> list[dict]:
    """Fold the leading system message into the first user turn as ``"{system}\\n\\n{user}"`` (a copy)."""
    return to_chat(messages, system_role=False)


def apply_chat_template(tokenizer, messages: list[dict], system_role: bool = True,
                        add_generation_prompt: bool = True) -> str:
    """Render `messages` with the tokenizer's own chat template (no silent fallback to a plain format)."""
    return tokenizer.apply_chat_template(to_chat(messages, system_role), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def render_prompt_ids(tokenizer, messages: list[dict], system_role: bool = True) -> list[int]:
    """Token ids of the chat-templated prompt with the assistant header (what trl's SFTTrainer builds in training)."""
    out = tokenizer.apply_chat_template(to_chat(messages, system_role), add_generation_prompt=True, tokenize=True,
                                        return_dict=True)
    return list(out["input_ids"])
