"""Student generation: batched, chat-templated, greedy by default, identical for M0, M_int and M_DART.

Why: the paper compares models "under identical decoding conditions". Every model goes through ``generate`` with
the same ``GenerationParams``; prompts are tokenized exactly as in training (``apply_chat_template`` to ids with
``add_generation_prompt=True`` and no extra special tokens, so no duplicated BOS, unlike the reference code §2.7).

One model load for several models (paper: M0 vs M_int in the audit, M0 / M_int / M_DART in the evaluation)::

    model, tok = models.load_student(p.student, cache_dir)
    model = models.attach_adapter(model, run / "stage1" / "adapter", name="M_int")
    with use_adapter(model, None):          # LoRA layers switched off: exactly the base model M0
        m0 = generate(model, tok, prompts, p.generation, seed)
    with use_adapter(model, "M_int"):
        mint = generate(model, tok, prompts, p.generation, seed)

``use_adapter(model, None)`` is peft's ``model.disable_adapter()``; it gives the same outputs as the bare base model
(tested). Only one copy of the base weights is in memory (the reference kept two full models).

Sampling (``gp.do_sample``) is seeded once per call with ``torch.manual_seed(seed)``; sampled outputs then depend on
the batch composition, as in the authors' code. Greedy decoding (the default) does not.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .params import GenerationParams
from .prompts import to_chat

__all__ = ["GenerationResult", "generate", "merge_system", "render_prompt_ids", "use_adapter", "eos_token_ids"]


@dataclass
class GenerationResult:
    texts: list[str]                  # decoded new tokens only, special tokens skipped; in input order
    new_token_counts: list[int]       # tokens generated per prompt (including the stop token, excluding padding)
    finished: list[bool]              # True: stopped at an end token; False: cut at max_new_tokens
    wall_time_s: float
    tokens_per_s: float               # all new tokens / wall time
    prompt_token_counts: list[int] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)   # decoding settings, to store beside every output


def merge_system(messages: list[dict]) -> list[dict]:
    """Fold the leading system message into the first user turn as ``"{system}\\n\\n{user}"`` (a copy).

    For chat templates without a system role (e.g. Gemma-2); the same rule as ``prompts.to_chat`` (which it uses),
    so training and inference merge identically.
    """
    return to_chat(messages, system_role=False)


def render_prompt_ids(tokenizer, messages: list[dict], system_role: bool = True) -> list[int]:
    """Token ids of the chat-templated prompt with the assistant header (what trl's SFTTrainer builds in training)."""
    if not system_role:
        messages = merge_system(messages)
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def eos_token_ids(model, tokenizer) -> list[int]:
    """The tokenizer's eos plus every eos in the model's generation config (Llama-3: <|eot_id|>, <|end_of_text|>)."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for x in [tokenizer.eos_token_id] + (gen_eos if isinstance(gen_eos, list) else [gen_eos]):
        if x is not None and x not in ids:
            ids.append(int(x))
    return ids


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def use_adapter(model, name: str | None):
    """Generate with one adapter active (``name``) or with all adapters disabled (``None`` = the base model, M0).

    Works on a ``PeftModel`` (see ``models.attach_adapter``); for a bare model only ``None`` is accepted. The
    previously active adapter is restored on exit.
    """
    from peft import PeftModel
    if not isinstance(model, PeftModel):
        if name is not None:
            raise ValueError(f"adapter {name!r} requested but the model has no adapters (use models.attach_adapter)")
        yield model
        return
    if name is None:
        with model.disable_adapter():
            yield model
        return
    if name not in model.peft_config:
        raise ValueError(f"no adapter named {name!r}; attached: {', '.join(model.peft_config)}")
    previous = model.active_adapter
    model.set_adapter(name, inference_mode=True)
    try:
        yield model
    finally:
        if previous != name:
            model.set_adapter(previous, inference_mode=True)


def _generation_config(model, tokenizer, gp: GenerationParams):
    from transformers import GenerationConfig
    kwargs: dict[str, Any] = dict(
        max_new_tokens=gp.max_new_tokens, do_sample=gp.do_sample, num_beams=1, repetition_penalty=1.0,
        eos_token_id=eos_token_ids(model, tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    if gp.do_sample:   # the authors' sampling: temperature, top-p, top-k off
        kwargs.update(temperature=gp.temperature, top_p=gp.top_p, top_k=0)
    else:              # greedy: unset the sampling knobs so a model's own defaults (e.g. Llama-3's T 0.6) never apply
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return GenerationConfig(**kwargs)


def generate(model, tokenizer, prompts: list[list[dict]], gp: GenerationParams, seed: int, system_role: bool = True,
             desc: str = "generate", progress: bool = True) -> GenerationResult:
    """Generate one completion per message list (batched by ``gp.batch_size``, left padding); results in input order.

    Prompts are sorted by length (longest first) so batches hold similar lengths and little padding; greedy unless
    ``gp.do_sample``; stops at the end token(s) or after ``gp.max_new_tokens``.
    """
    n = len(prompts)
    settings = {"max_new_tokens": gp.max_new_tokens, "do_sample": gp.do_sample, "batch_size": gp.batch_size,
                "seed": seed, "system_role": system_role, "chat_template": True}
    if gp.do_sample:
        settings.update(temperature=gp.temperature, top_p=gp.top_p, top_k=0)
    if n == 0:
        return GenerationResult([], [], [], 0.0, 0.0, [], settings)
    if gp.batch_size < 1:
        raise ValueError(f"generation.batch_size must be >= 1, got {gp.batch_size}")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; load it with models.load_student / prepare_tokenizer")
    ids = [render_prompt_ids(tokenizer, msgs, system_role) for msgs in prompts]
    order = sorted(range(n), key=lambda i: (-len(ids[i]), i))
    cfg = _generation_config(model, tokenizer, gp)
    stop = torch.tensor(cfg.eos_token_id)
    device = _device_of(model)
    texts: list[str] = [""] * n
    counts = [0] * n
    finished = [False] * n
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    try:
        with torch.inference_mode(), tqdm(total=n, desc=desc, disable=not progress, unit="prompt") as bar:
            for start in range(0, n, gp.batch_size):
                batch = order[start:start + gp.batch_size]
                width = max(len(ids[i]) for i in batch)
                input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):       # left padding
                    input_ids[row, width - len(ids[i]):] = torch.tensor(ids[i], dtype=torch.long)
                    attention[row, width - len(ids[i]):] = 1
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                     generation_config=cfg)
                new = out[:, width:].cpu()
                for row, i in enumerate(batch):
                    seq = new[row]
                    hits = torch.isin(seq, stop).nonzero()
                    if len(hits):
                        k = int(hits[0]) + 1
                        finished[i] = True
                    else:
                        k = len(seq)
                    counts[i] = k
                    texts[i] = tokenizer.decode(seq[:k].tolist(), skip_special_tokens=True)
                bar.update(len(batch))
    finally:
        if was_training:
            model.train()
    wall = time.perf_counter() - t0
    return GenerationResult(texts=texts, new_token_counts=counts, finished=finished, wall_time_s=wall,
                            tokens_per_s=sum(counts) / wall if wall > 0 else 0.0,
                            prompt_token_counts=[len(x) for x in ids], settings=settings)


def cached_predictions(model, tokenizer, rows, name: str, adapter: str | None, adapter_dir, gp: GenerationParams,
                       seed: int, path, system_role: bool = True, question_field: str = "question",
                       make_records=None, messages: list[list[dict]] | None = None) -> tuple[list[dict], dict | str]:
    """Prediction records of one model on `rows` (E.3 prompt, policy off, with rows[question_field] as the prompt),
    read from `path` when they were written for the same base model, adapter weights, decoding, items, seed and
    prompt; otherwise generated (adapter None = the base model M0) and saved with that key. `make_records(rows,
    texts, new_token_counts, name)` builds the records (default evaluation.to_predictions, which needs gold labels).
    `messages` (one message list per row, e.g. the App. F policy prompts) replaces the E.3 prompt and is part of the
    key. Returns (records, stats): stats is "reused" or the tokens/s, wall time and token count of the generation."""
    from . import models
    from .evaluation import to_predictions
    from .prompts import INFERENCE_USER, inference_messages
    from .runs import content_key, dir_hash, load_if_fresh, save_with_key
    ids = list(rows["id"]) if hasattr(rows, "column_names") else [r["id"] for r in rows]
    questions = (list(rows[question_field]) if hasattr(rows, "column_names")
                 else [r[question_field] for r in rows])
    key = content_key([models.describe(model)["name_or_path"], gp.model_dump(), ids, seed],
                      dir_hash(adapter_dir) if adapter else None, INFERENCE_USER,
                      *([] if question_field == "question" else [question_field, questions]),
                      *([] if messages is None else ["messages", messages]))
    if messages is not None and len(messages) != len(ids):
        raise ValueError(f"{len(messages)} message lists for {len(ids)} rows")
    records = load_if_fresh(path, key)
    if records is not None:
        return records, "reused"
    prompts = messages if messages is not None else [inference_messages(q) for q in questions]
    with use_adapter(model, adapter):
        out = generate(model, tokenizer, prompts, gp, seed=seed, system_role=system_role, desc=name)
    records = (make_records or to_predictions)(rows, out.texts, out.new_token_counts, name)
    save_with_key(records, path, key)
    return records, {"tokens_per_s": round(out.tokens_per_s, 1), "wall_time_s": round(out.wall_time_s, 1),
                     "new_tokens": sum(out.new_token_counts)}
