"""Student generation outside the notebook's transformers model: an OpenAI-compatible server (``backend: openai``)
or in-process vLLM (``backend: vllm``), with M0 / M_int / M_DART as LoRA requests on one engine.

Why: the paper profile generates ≈ 30,000 answers; plain batched ``generate`` on one GPU takes many hours where
vLLM's paged attention and continuous batching take minutes. Both paths take the exact prompt token ids that
``generation.cached_generate`` renders with the student's chat template (so templating is identical to the ``hf``
backend and to training), decode greedily unless ``do_sample``, stop at the end of turn or ``max_new_tokens``, and
return the same ``GenerationResult``, cached under the same kind of key (with the backend and the served model
named in it). Outputs match ``hf`` greedy up to the engines' numerics (different kernels can flip a near-tie).

``openai``: the prompt goes to ``/v1/completions`` as the rendered chat text (``llama.cpp``'s server parses its
special tokens) or as token ids (``server.token_ids: true``, vLLM). The server's model for the base is
``server.models["base"]``; an adapter is ``server.models[<adapter name>]`` (e.g. ``vllm serve <student>
--enable-lora --lora-modules M_int=<adapter dir>``) or, with ``server.load_adapters``, loaded when first needed
through vLLM's ``/v1/load_lora_adapter`` under a name that carries its content hash (the stage trains M_int and
generates with it in one run, so the adapter does not exist when the server starts). Token counts are the server's
``usage.completion_tokens``; a server whose ``usage.prompt_tokens`` differs from the rendered prompt's length read
another prompt (special tokens parsed as text, an added BOS) and stops the run. vLLM is not installable on the CPU machines this project is built on: ``vllm`` is an
optional extra (``pip install vllm`` on a GPU machine) and its absence is a clear error, never a fallback.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..core.params import GenerationParams
from ..core.progress import bar

__all__ = ["generate_served", "served_key"]

_VLLM_ENGINES: dict[tuple, object] = {}


def served_key(gp: GenerationParams, adapter: str | None) -> dict:
    """What the cache key adds for a non-hf backend: the backend and the server's model name (not its URL)."""
    if gp.backend == "openai":
        name = "base" if adapter is None else adapter
        return {"backend": "openai", "served_model": gp.server.models.get(name, f"{name} (loaded at run time)"),
                "prompt": "token_ids" if gp.server.token_ids else "text"}
    return {"backend": gp.backend}


def generate_served(model, tokenizer, ids: list[list[int]], gp: GenerationParams, seed: int, adapter: str | None,
                    adapter_dir: Path | None, eos: list[int], desc: str = "generate", progress: bool = True):
    """Generate one completion per prompt (token ids) through ``gp.backend``; results in input order."""
    from .generation import GenerationResult

    settings = {"max_new_tokens": gp.max_new_tokens, "do_sample": gp.do_sample, "seed": seed, "chat_template": True,
                "backend": gp.backend}
    if gp.do_sample:
        settings.update(temperature=gp.temperature, top_p=gp.top_p)
    t0 = time.perf_counter()
    if gp.backend == "openai":
        texts, counts, finished = _openai(tokenizer, ids, gp, seed, adapter, adapter_dir, desc, progress)
    elif gp.backend == "vllm":
        texts, counts, finished = _vllm(model, ids, gp, seed, adapter, adapter_dir, eos)
    else:
        raise ValueError(f"generate_served: backend {gp.backend!r} is not a served backend")
    wall = time.perf_counter() - t0
    return GenerationResult(texts=texts, new_token_counts=counts, finished=finished, wall_time_s=wall,
                            tokens_per_s=sum(counts) / wall if wall > 0 else 0.0,
                            prompt_token_counts=[len(x) for x in ids], settings=settings)


# ------------------------------------------------------------------------------------------------- openai server
def _client(gp: GenerationParams):
    import openai

    from ..core.params import resolve_env
    key = resolve_env(gp.server.api_key_env, f"student server {gp.server.base_url}") if gp.server.api_key_env \
        else "EMPTY"
    return openai.OpenAI(base_url=gp.server.base_url, api_key=key, max_retries=3, timeout=600)


def _served_model(gp: GenerationParams, adapter: str | None, adapter_dir: Path | None) -> str:
    name = "base" if adapter is None else adapter
    if name in gp.server.models:
        return gp.server.models[name]
    if adapter is None:
        raise ValueError("generation.server.models has no 'base' entry: name the server's model for the student "
                         "without adapter (M0), e.g. models: {base: smollm2}")
    if not gp.server.load_adapters:
        raise ValueError(f"generation.server.models has no entry for adapter {adapter!r}: serve it (e.g. vllm serve "
                         f"<student> --enable-lora --lora-modules {adapter}={adapter_dir}) and map it, or set "
                         f"generation.server.load_adapters: true (vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)")
    import httpx

    from ..core.hashing import dir_hash
    lora = f"{adapter}-{dir_hash(adapter_dir)[:12]}"
    r = httpx.post(gp.server.base_url.rstrip("/") + "/load_lora_adapter", timeout=600,
                   json={"lora_name": lora, "lora_path": str(Path(adapter_dir).resolve())})
    if r.status_code >= 400 and "already" not in r.text.lower():
        raise RuntimeError(f"the server refused to load adapter {adapter!r} from {adapter_dir}: HTTP {r.status_code} "
                           f"{r.text[:300]} (is it vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?)")
    return lora


def _openai(tokenizer, ids, gp, seed, adapter, adapter_dir, desc, progress):
    client, model_name = _client(gp), _served_model(gp, adapter, adapter_dir)
    sampling = {"temperature": gp.temperature, "top_p": gp.top_p} if gp.do_sample else {"temperature": 0.0}

    def one(x: list[int]):
        prompt = x if gp.server.token_ids else tokenizer.decode(x, skip_special_tokens=False)
        r = client.completions.create(model=model_name, prompt=prompt, max_tokens=gp.max_new_tokens, seed=seed,
                                      **sampling)
        c = r.choices[0]
        if r.usage and r.usage.prompt_tokens != len(x):
            raise RuntimeError(f"the server read {r.usage.prompt_tokens} prompt tokens where the student's chat template "
                               f"gives {len(x)}: it tokenises the text differently (special tokens, an added BOS); "
                               f"set generation.server.token_ids: true (vLLM) or check the server's tokenizer")
        return c.text, int(r.usage.completion_tokens) if r.usage else 0, c.finish_reason == "stop"

    out = [None] * len(ids)
    with ThreadPoolExecutor(gp.server.concurrency) as pool, \
            bar(total=len(ids), desc=desc, disable=not progress, unit="prompt") as progress_bar:
        futures = {pool.submit(one, x): i for i, x in enumerate(ids)}
        for f, i in futures.items():
            out[i] = f.result()
            progress_bar.update(1)
    return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]


# ------------------------------------------------------------------------------------------------- vLLM in process
def _vllm(model, ids, gp, seed, adapter, adapter_dir, eos):
    try:
        import vllm
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest
    except ImportError as e:
        raise ImportError("generation.backend 'vllm' needs the vllm package, an optional extra for GPU machines "
                          "(pip install vllm; it does not install on the CPU machines this project is built on). "
                          "Use backend: hf, or backend: openai with a vLLM server elsewhere.") from e
    src = getattr(model.config, "_name_or_path", "")
    if not src:
        raise ValueError("backend 'vllm' loads the student from its source; this model has none (built in memory)")
    dtype = str(model.dtype).removeprefix("torch.")
    key = (src, dtype)
    if key not in _VLLM_ENGINES:        # one engine per student: M0, M_int and M_DART are LoRA requests on it
        _VLLM_ENGINES[key] = vllm.LLM(model=src, dtype=dtype, enable_lora=True, max_lora_rank=64, seed=seed)
    engine = _VLLM_ENGINES[key]
    sp = vllm.SamplingParams(max_tokens=gp.max_new_tokens, seed=seed, stop_token_ids=eos,
                             **({"temperature": gp.temperature, "top_p": gp.top_p} if gp.do_sample
                                else {"temperature": 0.0}))
    lora = None
    if adapter is not None:
        from ..core.hashing import dir_hash
        lora = LoRARequest(adapter, int(dir_hash(adapter_dir)[:8], 16) or 1, str(adapter_dir))
    outs = engine.generate([TokensPrompt(prompt_token_ids=x) for x in ids], sp, lora_request=lora)
    return ([o.outputs[0].text for o in outs], [len(o.outputs[0].token_ids) for o in outs],
            [o.outputs[0].finish_reason == "stop" for o in outs])
