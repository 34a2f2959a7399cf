"""One LLM client for the teacher and the judge, with a persistent, content-addressed cache.

Why: the reference code kept a judge cache that stored only 0/1 verdicts, in memory, written at the end
(reference §5.4, §7, §10). Here every call (teacher, fix rounds, judge) goes through `LLMClient`: each result is
written to SQLite as soon as it arrives, with the full response JSON, usage and time, keyed by the request that
produced it (backend, model identity, endpoint, messages, decoding parameters actually sent, seed). A re-run is free
and returns the same text; an interrupted batch resumes where it stopped. Secrets never reach the cache: the key is
read from the environment variable that the parameters name, and only the credential-free endpoint is recorded.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..core.hashing import sha256_file
from ..core.params import SECRET_WORDS, LLMParams, resolve_env
from ..core.progress import bar as progress_bar
from . import offline_models

CACHE_VERSION = 1
OVERRIDABLE = ("temperature", "max_tokens")


class LLMError(RuntimeError):
    """A call failed after the backend's own retries; the message says what to check (never the key)."""


@dataclass(frozen=True)
class LLMResponse:
    text: str
    finish_reason: str | None
    usage: dict = field(default_factory=dict)   # prompt_tokens, completion_tokens
    cached: bool = False
    cache_key: str = ""
    model: str = ""                             # the model name the server reported (the requested one if absent)
    backend: str = ""
    raw: dict = field(default_factory=dict)     # the full response, JSON-able


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def public_url(url: str | None) -> str | None:
    """The endpoint without user:password@ and without secret-looking query parameters (safe to store/print)."""
    if not url:
        return url
    parts = urlsplit(str(url))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    secret = SECRET_WORDS + ("key", "token", "sig")
    query = [(k, v) for k, v in parse_qsl(parts.query) if not any(w in k.lower() for w in secret)]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), urlencode(query), ""))


# ---- llama.cpp: one load per (file, n_ctx) per process, shared by teacher and judge ---------------------------------
_LLAMAS: dict[tuple[str, int], tuple[object, threading.Lock]] = {}
_LLAMAS_LOCK = threading.Lock()
_FILE_IDS: dict[tuple[str, int, int], dict] = {}


# Prefix reuse in blocks of this many tokens (also the prompt-evaluation batch). Why: llama.cpp keeps the previous
# call's tokens and re-evaluates only the new suffix, and a token's numerics depend on which evaluation chunk it fell
# in; with reuse at any length, a reply depended on the call before it (measured: 2 of 8 teacher and 1 of 8 judge
# replies changed when the same requests ran in another order, docs/calibration.md §4). Reusing only whole blocks
# keeps every chunk boundary where a fresh context puts it, so a reply is the same in any order, resumed or cold.
REUSE_BLOCK = 128


def _aligned_llama_class():
    from llama_cpp import Llama

    class AlignedLlama(Llama):
        """`Llama` whose prompt evaluation starts at a multiple of `n_batch` (see REUSE_BLOCK)."""
        align_next_eval = False

        def eval(self, tokens):
            if self.align_next_eval:            # the first eval of a call is its prompt (suffix after the reuse)
                self.align_next_eval = False
                start = self.n_tokens - self.n_tokens % self.n_batch
                if start != self.n_tokens:
                    tokens = [int(t) for t in self.input_ids[start:self.n_tokens]] + list(tokens)
                    self.n_tokens = start        # super().eval drops the cache from here and re-evaluates
            return super().eval(tokens)

    return AlignedLlama


def _llama(path: Path, n_ctx: int, seed: int):
    """Load lazily and once; the returned lock serializes calls (a llama.cpp context is not thread-safe)."""
    key = (str(path.resolve()), n_ctx)
    with _LLAMAS_LOCK:
        if key not in _LLAMAS:
            _LLAMAS[key] = (_aligned_llama_class()(model_path=str(path), n_ctx=n_ctx, n_batch=REUSE_BLOCK,
                                                   n_threads=os.cpu_count(), seed=seed, verbose=False),
                            threading.Lock())
        return _LLAMAS[key]


def unload_models() -> None:
    """Drop the shared llama.cpp models (frees memory; the next call reloads)."""
    with _LLAMAS_LOCK:
        for llama, _ in _LLAMAS.values():
            close = getattr(llama, "close", None)
            if close:
                close()
        _LLAMAS.clear()


# llama.cpp objects freed during interpreter shutdown raise "'NoneType' object is not callable"; free them first.
atexit.register(unload_models)


def gguf_identity(name: str) -> dict:
    """Name, size and SHA-256 of the GGUF behind `name`, so a different model file never hits the cache."""
    path = offline_models.gguf_path(name)
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_IDS:
        entry = offline_models.REGISTRY.get(name)
        # a pinned SHA-256 was verified when the parts were assembled; other files are hashed (once per process)
        digest = entry.sha256 if entry and entry.sha256 else sha256_file(path)
        _FILE_IDS[memo] = {"file": path.name, "size": st.st_size, "sha256": digest}
    return _FILE_IDS[memo]


# ---- the client --------------------------------------------------------------------------------------------------
class LLMClient:
    """Chat completions through `cfg.backend` ("openai" endpoint or in-process "llama_cpp"), cached in SQLite."""

    def __init__(self, cfg: LLMParams, cache_path: Path, seed: int = 42):
        self.cfg, self.seed = cfg, seed
        self._stats = {"calls": 0, "cache_hits": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0,
                       "seconds": 0.0, "cached_calls": 0, "cached_prompt_tokens": 0, "cached_completion_tokens": 0,
                       "cached_seconds": 0.0}
        self._stats_lock = threading.Lock()
        self._counted: set[str] = set()     # keys whose tokens this instance already counted (fresh or cached)
        self._identity: dict = {"backend": cfg.backend, "model": cfg.model}
        if cfg.backend == "openai":
            import openai
            api_key = (resolve_env(cfg.api_key_env, f"LLM endpoint {public_url(cfg.base_url)} (model {cfg.model})")
                       if cfg.api_key_env else "EMPTY")      # local vLLM / llama.cpp servers take any key
            self._client = openai.OpenAI(base_url=cfg.base_url, api_key=api_key, max_retries=cfg.max_retries,
                                         timeout=cfg.timeout_s)
            self._identity["base_url"] = public_url(str(self._client.base_url))
        else:
            self._client = None
            # the reuse block is in the key: replies made under another evaluation schedule can differ
            self._identity.update(model_file=gguf_identity(cfg.model), n_ctx=cfg.n_ctx, reuse_block=REUSE_BLOCK)
        self.cache_path = Path(cache_path)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the worker threads behind a lock; WAL + busy timeout let processes share the file.
        self._db = sqlite3.connect(self.cache_path, check_same_thread=False, timeout=60, isolation_level=None)
        self._db_lock = threading.Lock()
        with self._db_lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, request TEXT NOT NULL, "
                             "response TEXT NOT NULL, text TEXT, finish_reason TEXT, prompt_tokens INTEGER, "
                             "completion_tokens INTEGER, model TEXT, backend TEXT, seconds REAL, created_at TEXT)")

    # -- requests and keys
    def _decoding(self, overrides: dict) -> dict:
        bad = sorted(set(overrides) - set(OVERRIDABLE))
        if bad:
            raise ValueError(f"LLMClient: cannot override {bad}; per-call overrides allowed: {list(OVERRIDABLE)}. "
                             f"Other settings belong in the teacher/judge parameters.")
        t = overrides.get("temperature", self.cfg.temperature)
        m = overrides.get("max_tokens", self.cfg.max_tokens)
        if not isinstance(t, (int, float)) or t < 0 or not isinstance(m, int) or m < 1:
            raise ValueError(f"LLMClient: need temperature >= 0 and an integer max_tokens >= 1, got {t!r}, {m!r}")
        return {"temperature": float(t), "max_tokens": m}

    def _request(self, messages: list[dict], overrides: dict) -> dict:
        if not (isinstance(messages, list) and messages and
                all(isinstance(m, dict) and "role" in m and "content" in m for m in messages)):
            raise ValueError("LLMClient: messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
        return {"v": CACHE_VERSION, **self._identity, "messages": messages,
                "decoding": self._decoding(overrides), "seed": self.seed}

    def cache_key(self, messages: list[dict], **overrides) -> str:
        """The key a call with these messages and overrides is cached under (no call is made)."""
        return hashlib.sha256(_canonical(self._request(messages, overrides)).encode()).hexdigest()

    # -- cache
    def _lookup(self, key: str) -> tuple[LLMResponse, float] | None:
        """The cached response and the seconds its original call took (0 if not recorded)."""
        with self._db_lock:
            row = self._db.execute("SELECT response, text, finish_reason, prompt_tokens, completion_tokens, model, "
                                   "backend, seconds FROM responses WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        raw, text, finish, pt, ct, model, backend, seconds = row
        return (LLMResponse(text, finish, {"prompt_tokens": pt, "completion_tokens": ct}, True, key, model, backend,
                            json.loads(raw)), float(seconds or 0.0))

    def _store(self, key: str, request: dict, r: LLMResponse, seconds: float) -> None:
        with self._db_lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                             (key, _canonical(request), _canonical(r.raw), r.text, r.finish_reason,
                              r.usage.get("prompt_tokens"), r.usage.get("completion_tokens"), r.model, r.backend,
                              seconds, datetime.now(UTC).isoformat(timespec="seconds")))

    def _count(self, **inc) -> None:
        with self._stats_lock:
            for k, v in inc.items():
                self._stats[k] += v

    def _count_hit(self, r: LLMResponse, seconds: float) -> None:
        """A cache hit; its tokens and original call time count once per distinct response per instance (not again
        for a response this instance called itself or already counted), so fresh + cached = a cold run's cost."""
        with self._stats_lock:
            self._stats["cache_hits"] += 1
            if r.cache_key in self._counted:
                return
            self._counted.add(r.cache_key)
            self._stats["cached_calls"] += 1
            self._stats["cached_prompt_tokens"] += r.usage.get("prompt_tokens") or 0
            self._stats["cached_completion_tokens"] += r.usage.get("completion_tokens") or 0
            self._stats["cached_seconds"] += seconds

    # -- backends
    def _call(self, request: dict) -> dict:
        dec = request["decoding"]
        if self.cfg.backend == "llama_cpp":
            llm, lock = _llama(offline_models.gguf_path(self.cfg.model), self.cfg.n_ctx, self.seed)
            try:
                with lock:
                    llm.align_next_eval = True
                    return llm.create_chat_completion(messages=request["messages"], temperature=dec["temperature"],
                                                      max_tokens=dec["max_tokens"], seed=self.seed)
            except ValueError as e:  # e.g. the prompt does not fit the context window
                raise LLMError(f"llama.cpp call on {self.cfg.model} (n_ctx {self.cfg.n_ctx}) failed: {e}. Check that "
                               f"prompt tokens + max_tokens fit n_ctx.") from None
        import openai
        try:  # the openai library retries timeouts, 408/409/429 and 5xx itself, with exponential backoff
            out = self._client.chat.completions.create(model=self.cfg.model, messages=request["messages"],
                                                       temperature=dec["temperature"],
                                                       max_tokens=dec["max_tokens"], seed=self.seed)
        except openai.OpenAIError as e:
            status = getattr(e, "status_code", None)
            raise LLMError(
                f"LLM call to {self._identity['base_url']} (model {self.cfg.model}) failed after "
                f"{self.cfg.max_retries} retries: {type(e).__name__}{f' HTTP {status}' if status else ''}: "
                f"{str(e)[:300]}. Check that the server is up and reachable, that it serves model "
                f"'{self.cfg.model}', that the key in ${self.cfg.api_key_env or '(none: EMPTY placeholder)'} is "
                f"valid and has quota, and the rate limit / timeout_s / max_retries parameters.") from None
        return out.to_dict(mode="json")

    # -- public API
    def chat(self, messages: list[dict], **overrides) -> LLMResponse:
        """One chat completion; a cache hit makes no call, a fresh result is stored before it is returned."""
        request = self._request(messages, overrides)
        key = hashlib.sha256(_canonical(request).encode()).hexdigest()
        hit = self._lookup(key)
        if hit is not None:
            self._count_hit(*hit)
            return hit[0]
        t0 = time.perf_counter()
        try:
            raw = self._call(request)
        except Exception:
            self._count(errors=1, seconds=time.perf_counter() - t0)
            raise
        seconds = time.perf_counter() - t0
        choice = (raw.get("choices") or [{}])[0]
        usage = raw.get("usage") or {}
        r = LLMResponse(text=(choice.get("message") or {}).get("content") or "",
                        finish_reason=choice.get("finish_reason"),
                        usage={"prompt_tokens": usage.get("prompt_tokens"),
                               "completion_tokens": usage.get("completion_tokens")},
                        cached=False, cache_key=key, model=str(raw.get("model") or self.cfg.model),
                        backend=self.cfg.backend, raw=raw)
        self._store(key, request, r, seconds)
        with self._stats_lock:
            self._counted.add(key)
        self._count(calls=1, seconds=seconds, prompt_tokens=usage.get("prompt_tokens") or 0,
                    completion_tokens=usage.get("completion_tokens") or 0)
        return r

    def chat_many(self, list_of_messages: list[list[dict]], desc: str = "", **overrides) -> list[LLMResponse]:
        """Many chats, in input order, with at most cfg.concurrency in flight. Each result is cached as it arrives;
        on the first failure, queued items are cancelled, in-flight ones finish (and are cached), and the error is
        raised: re-running the same batch then calls only for what is missing."""
        keys = [self.cache_key(m, **overrides) for m in list_of_messages]
        first: dict[str, int] = {}
        copies = Counter(keys)
        for i, k in enumerate(keys):
            first.setdefault(k, i)        # identical requests in one batch are called once
        done: dict[str, LLMResponse] = {}
        pool = ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency))
        bar = progress_bar(total=len(list_of_messages), desc=desc or None, unit="call")
        try:
            futures = {pool.submit(self.chat, list_of_messages[i], **overrides): k for k, i in first.items()}
            for fut in as_completed(futures):
                done[futures[fut]] = fut.result()
                bar.update(copies[futures[fut]])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        out = []
        for i, k in enumerate(keys):
            if first[k] == i:
                out.append(done[k])
            else:
                self._count(cache_hits=1)
                out.append(replace(done[k], cached=True))
        return out

    def stats(self) -> dict:
        """Counts for this client instance. calls, cache_hits, errors, prompt_tokens, completion_tokens, seconds:
        live calls only (a warm rerun reports 0 tokens). cached_calls, cached_prompt_tokens,
        cached_completion_tokens, cached_seconds: the distinct responses served from the cache that this instance did
        not call itself, with the tokens and call time recorded when they were first made. calls + cached_calls and
        the token sums are what a cold run (empty cache) of the same requests would make and spend."""
        with self._stats_lock:
            return dict(self._stats)

    def close(self) -> None:
        with self._db_lock:
            self._db.close()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
