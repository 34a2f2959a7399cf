"""Student generation: batched, chat-templated, greedy by default, identical for M0, M_int and M_DART.

Why: the paper compares models "under identical decoding conditions". Every model goes through ``generate`` with
the same ``GenerationParams``; prompts are tokenized exactly as in training (``apply_chat_template`` to ids with
``add_generation_prompt=True`` and no extra special tokens, so no duplicated BOS, unlike the reference code §2.7).

One model load for several models (paper: M0 vs M_int in the audit, M0 / M_int / M_DART in the evaluation)::

    model, tok = student.load_student(p.student, cache_dir)
    model = student.attach_adapter(model, adapter_dir, name="M_int")
    with use_adapter(model, None):          # LoRA layers switched off: exactly the base model M0
        m0 = generate(model, tok, prompts, p.generation, seed)
    with use_adapter(model, "M_int"):
        mint = generate(model, tok, prompts, p.generation, seed)

``use_adapter(model, None)`` is peft's ``model.disable_adapter()``; it gives the same outputs as the bare base model
(tested). Only one copy of the base weights is in memory (the reference kept two full models).

Sampling (``gp.do_sample``) is seeded once per call with ``torch.manual_seed(seed)``; sampled outputs then depend on
the batch composition, as in the authors' code. Greedy decoding (the default) does not.

``cached_generate`` keys every generation by everything that decides its tokens (``generation_key``) and keeps the
raw outputs in ``runs/cache/generations/``: a rerun with the same inputs generates nothing, and any change of a
question, a prompt, the chat template, the weights, the adapter or the decoding generates anew.

``generation.backend`` (``hf`` by default) sends ``cached_generate``'s prompts to in-process vLLM or to an
OpenAI-compatible server instead (``serving``): same prompt ids, same decoding, same result type and cache.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.params import GenerationParams
from ..core.progress import bar
from . import serving
from .chat import merge_system, render_prompt_ids

__all__ = ["GenerationResult", "generate", "cached_generate", "generation_key", "use_adapter", "eos_token_ids",
           "merge_system", "render_prompt_ids"]


@dataclass
class GenerationResult:
    texts: list[str]                  # decoded new tokens only, special tokens skipped; in input order
    new_token_counts: list[int]       # tokens generated per prompt (including the stop token, excluding padding)
    finished: list[bool]              # True: stopped at an end token; False: cut at max_new_tokens
    wall_time_s: float
    tokens_per_s: float               # all new tokens / wall time
    prompt_token_counts: list[int] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)   # decoding settings, to store beside every output
    reused: bool = False              # cached_generate: read from the generation cache, nothing was generated
    key: str = ""                     # cached_generate: the generation's cache key


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
             desc: str = "generate", progress: bool = True, prompt_ids: list[list[int]] | None = None
             ) -> GenerationResult:
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
    if prompt_ids is not None and len(prompt_ids) != n:
        raise ValueError(f"{len(prompt_ids)} prompt id lists for {n} prompts")
    if gp.batch_size < 1:
        raise ValueError(f"generation.batch_size must be >= 1, got {gp.batch_size}")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; load it with models.load_student / prepare_tokenizer")
    ids = prompt_ids if prompt_ids is not None else [render_prompt_ids(tokenizer, m, system_role) for m in prompts]
    cfg = _generation_config(model, tokenizer, gp)
    if gp.engine == "continuous":
        settings["engine"] = "continuous"
        return _generate_continuous(model, tokenizer, ids, cfg, gp, seed, settings, desc, progress)
    order = sorted(range(n), key=lambda i: (-len(ids[i]), i))
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
        with torch.inference_mode(), bar(total=n, desc=desc, disable=not progress, unit="prompt") as progress_bar:
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
                progress_bar.update(len(batch))
    finally:
        if was_training:
            model.train()
    wall = time.perf_counter() - t0
    return GenerationResult(texts=texts, new_token_counts=counts, finished=finished, wall_time_s=wall,
                            tokens_per_s=sum(counts) / wall if wall > 0 else 0.0,
                            prompt_token_counts=[len(x) for x in ids], settings=settings)


def _split_at_stop(tokens: list[int], stop: set[int]) -> tuple[list[int], bool]:
    """The tokens up to and including the first stop token, and whether there was one."""
    for k, t in enumerate(tokens):
        if t in stop:
            return tokens[:k + 1], True
    return tokens, False


def _generate_continuous(model, tokenizer, ids: list[list[int]], cfg, gp: GenerationParams, seed: int,
                         settings: dict, desc: str, progress: bool) -> GenerationResult:
    """transformers' continuous batching (`generate_batch`): a finished sequence frees its slot at once and the next
    prompt takes it, so no slot waits for the longest member of a fixed batch. At most `gp.batch_size` sequences
    are in flight; paged attention on the unpadded prompts (no padding tokens at all). On a `PeftModel` the call
    goes to the wrapped transformers model, whose layers carry the LoRA weights: the active adapter (or none, inside
    `use_adapter(model, None)`) is what generates."""
    from peft import PeftModel
    from transformers import ContinuousBatchingConfig
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    sizing = {}
    if _device_of(model).type == "cpu":
        # transformers sizes the paged cache from free accelerator memory; on CPU that default allocates (and
        # zeroes) a huge cache first (45 s before the first token for SmolLM2-135M). Size it to the workload:
        # every sequence in flight at its longest.
        longest = max(len(x) for x in ids) + gp.max_new_tokens
        sizing = {"page_size": 64, "num_blocks": min(len(ids), gp.batch_size) * (-(-longest // 64)) + 4,
                  "max_batch_tokens": 512}
    cb = ContinuousBatchingConfig(max_requests_per_batch=gp.batch_size, allow_block_sharing=False,
                                  use_cuda_graph=False, seed=seed if gp.do_sample else None, **sizing)
    stop = set(cfg.eos_token_id)
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            out = inner.generate_batch(ids, generation_config=cfg, continuous_batching_config=cb,
                                       progress_bar=progress, warmup=False)
    finally:
        if was_training:
            model.train()
    wall = time.perf_counter() - t0
    results = list(out.values())
    bad = [r.request_id for r in results if r.error is not None]
    if len(results) != len(ids) or bad:
        raise RuntimeError(f"{desc}: continuous batching returned {len(results)} of {len(ids)} outputs"
                           f"{f'; failed requests {bad[:5]}' if bad else ''} (see the transformers log above); "
                           f"set generation.engine: static to generate without it")
    texts, counts, finished = [], [], []
    for r in results:                       # generate_batch returns the outputs in input order
        toks, hit = _split_at_stop(list(r.generated_tokens)[:gp.max_new_tokens], stop)
        texts.append(tokenizer.decode(toks, skip_special_tokens=True))
        counts.append(len(toks))
        finished.append(hit)
    return GenerationResult(texts=texts, new_token_counts=counts, finished=finished, wall_time_s=wall,
                            tokens_per_s=sum(counts) / wall if wall > 0 else 0.0,
                            prompt_token_counts=[len(x) for x in ids], settings=settings)


# ---- cached generation ----------------------------------------------------------------------------------------------
GENERATION_CACHE_VERSION = 1


def _decoding_key(gp: GenerationParams) -> dict:
    """The decoding settings in the key. The static engine is keyed as before `engine` existed (its outputs did not
    change), so caches made then stay valid; the continuous engine is keyed by name."""
    d = gp.model_dump(mode="json", exclude={"backend", "server"})   # a served backend: keyed by ``served_key``
    if d.get("engine") == "static":
        del d["engine"]
    return d


def generation_key(model, tokenizer, prompt_ids: list[list[int]], gp: GenerationParams, seed: int,
                   adapter_dir: Path | None, adapter: str | None = None) -> str:
    """The identity of a generation: the base weights (`student.identity`), the adapter's content, the exact prompt
    token ids (so the question texts, the system and user prompts, the chat template and `system_role` are all in
    it), the decoding settings, the seed, the stop tokens and the library versions that compute the logits; for a
    served backend (``serving``) also the backend and the server's model name."""
    import peft
    import transformers

    from ..core.hashing import content_key, dir_hash
    from .student import identity
    return content_key({
        "v": GENERATION_CACHE_VERSION, "model": identity(model),
        "adapter": dir_hash(adapter_dir) if adapter_dir is not None else None,
        "prompt_ids": prompt_ids, "decoding": _decoding_key(gp), "seed": seed,
        "eos": eos_token_ids(model, tokenizer),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        **({"served": serving.served_key(gp, adapter)} if gp.backend != "hf" else {}),
    })


def cached_generate(model, tokenizer, prompts: list[list[dict]], gp: GenerationParams, seed: int, cache_dir: Path,
                    adapter: str | None = None, adapter_dir: Path | None = None, system_role: bool = True,
                    desc: str = "generate") -> GenerationResult:
    """`generate` with the adapter `adapter` active (None = the base model, M0), reused from
    cache_dir/generations/<key>.json when a generation with the same `generation_key` exists (result.reused).

    Only raw outputs are cached (texts, token counts, stop flags): what a stage derives from them (parsed
    predictions) is recomputed every time, so a parser change never meets a stale parse. Pass `adapter_dir` with
    `adapter` (its content is part of the key)."""
    if (adapter is None) != (adapter_dir is None):
        raise ValueError("give both adapter (its name on the model) and adapter_dir (its files), or neither")
    ids = [render_prompt_ids(tokenizer, m, system_role) for m in prompts]
    key = generation_key(model, tokenizer, ids, gp, seed, adapter_dir, adapter)
    path = Path(cache_dir) / "generations" / f"{key}.json"
    if path.is_file():
        rec = json.loads(path.read_text(encoding="utf-8"))
        if len(rec["texts"]) == len(prompts):
            return GenerationResult(rec["texts"], rec["new_token_counts"], rec["finished"], rec["wall_time_s"],
                                    rec["tokens_per_s"], [len(x) for x in ids], rec["settings"], reused=True, key=key)
    if gp.backend != "hf":                  # vLLM or an OpenAI-compatible server, on the same prompt ids
        out = serving.generate_served(model, tokenizer, ids, gp, seed, adapter, adapter_dir,
                                      eos_token_ids(model, tokenizer), desc=desc)
    else:
        with use_adapter(model, adapter):
            out = generate(model, tokenizer, prompts, gp, seed=seed, system_role=system_role, desc=desc,
                           prompt_ids=ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "texts": out.texts, "new_token_counts": out.new_token_counts,
                               "finished": out.finished, "wall_time_s": out.wall_time_s,
                               "tokens_per_s": out.tokens_per_s, "settings": out.settings}, ensure_ascii=False),
                   encoding="utf-8")
    tmp.replace(path)                       # atomic: an interrupted run never leaves a half-written entry
    out.key = key
    return out
