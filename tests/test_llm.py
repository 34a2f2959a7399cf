"""LLMClient: a real llama.cpp server (openai backend), in-process llama.cpp, retries, the cache, secrets.

All traffic goes to 127.0.0.1. Models are the small SmolLM2 GGUF shipped in a PyPI wheel.
"""
from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dart_utils.core.params import LLMParams, ParamsError
from dart_utils.lm import llm, offline_models

SMOL = "smollm2-135m-instruct-q4_1"


def cfg(**kw) -> LLMParams:
    base = {"backend": "openai", "model": "smollm2", "base_url": None, "api_key_env": None, "temperature": 0.0,
            "max_tokens": 16, "concurrency": 2, "max_retries": 2, "timeout_s": 30.0, "n_ctx": 1024}
    return LLMParams(**{**base, **kw})


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- a real OpenAI-compatible server: llama_cpp.server on loopback ----------------------------------------------
@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model",
                                 str(offline_models.gguf_path(SMOL)), "--n_threads", "2", "--host", "127.0.0.1",
                                 "--port", str(port), "--n_ctx", "1024"], stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"llama_cpp.server did not answer in 90 s:\n{log.read_text()[-2000:]}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_openai_backend_real_server_and_persistent_cache(llama_server, tmp_path):
    db = tmp_path / "cache.sqlite"
    msgs = user("Say hello in one word.")
    with llm.LLMClient(cfg(base_url=llama_server), db) as c:
        r = c.chat(msgs)
        assert isinstance(r.text, str) and r.text.strip()
        assert not r.cached and r.backend == "openai" and r.finish_reason in ("stop", "length")
        assert r.usage["prompt_tokens"] > 0 and 0 < r.usage["completion_tokens"] <= 16
        assert r.raw["choices"][0]["message"]["content"] == r.text
        again = c.chat(msgs)
        assert again.cached and again.text == r.text and again.cache_key == r.cache_key
        assert again.raw == r.raw and again.usage == r.usage
        s = c.stats()
        assert (s["calls"], s["cache_hits"], s["errors"]) == (1, 1, 0)
        assert s["completion_tokens"] == r.usage["completion_tokens"] and s["seconds"] > 0
    with llm.LLMClient(cfg(base_url=llama_server), db) as c2:       # a new process/instance resumes from the file
        assert c2.chat(msgs).text == r.text
        assert (c2.stats()["calls"], c2.stats()["cache_hits"]) == (0, 1)
        assert not c2.chat(msgs, max_tokens=4).cached                  # decoding parameters are part of the key


# ---- a fake OpenAI endpoint that fails on purpose ---------------------------------------------------------------
class FakeOpenAI:
    """Answers /v1/chat/completions from `plan` (HTTP status per request; None = success), then with success.
    A success echoes the last user message. Prompts in `fail_on` get a non-retryable 400. Stops itself after 60 s."""

    def __init__(self, plan=(), fail_on=()):
        self.plan, self.fail_on = list(plan), set(fail_on)
        self.requests: list[dict] = []
        self.successes: dict[str, int] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with fake.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    fake.requests.append({"path": self.path, "headers": headers, "body": body})
                    status = fake.plan.pop(0) if fake.plan else None
                    if status is None and prompt in fake.fail_on:
                        status = 400
                    if status is None:
                        fake.successes[prompt] = fake.successes.get(prompt, 0) + 1
                time.sleep(random.uniform(0, 0.05))            # shuffle completion order under concurrency
                if status is None:
                    payload = {"id": "fake-1", "object": "chat.completion", "created": 1, "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": f"echo: {prompt}"}}],
                               "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
                    status = 200
                else:
                    payload = {"error": {"message": f"fake error {status}", "type": "fake", "code": status}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.timer = threading.Timer(60, self.server.shutdown)
        self.timer.daemon = True
        self.timer.start()

    def stop(self):
        self.timer.cancel()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    servers = []

    def make(**kw):
        servers.append(FakeOpenAI(**kw))
        return servers[-1]
    yield make
    for s in servers:
        s.stop()


def test_retries_429_then_success(fake, tmp_path):
    srv = fake(plan=[429, 429])
    with llm.LLMClient(cfg(base_url=srv.url, max_retries=2), tmp_path / "c.sqlite") as c:
        assert c.chat(user("hi")).text == "echo: hi"
        assert len(srv.requests) == 3 and c.stats()["errors"] == 0


def test_retries_exhausted_is_a_clear_error(fake, tmp_path):
    srv = fake(plan=[429, 429])
    with llm.LLMClient(cfg(base_url=srv.url, max_retries=1, model="my-model"), tmp_path / "c.sqlite") as c:
        with pytest.raises(llm.LLMError, match="429") as e:
            c.chat(user("hi"))
        assert srv.url in str(e.value) and "my-model" in str(e.value) and "Check" in str(e.value)
        assert len(srv.requests) == 2 and c.stats()["errors"] == 1


def test_retries_500_then_success(fake, tmp_path):
    srv = fake(plan=[500])
    with llm.LLMClient(cfg(base_url=srv.url, max_retries=2), tmp_path / "c.sqlite") as c:
        assert c.chat(user("hi")).text == "echo: hi" and len(srv.requests) == 2


def test_chat_many_order_duplicates_and_resume(fake, tmp_path):
    srv = fake(fail_on={"p5"})
    prompts = [user(f"p{i}") for i in range(8)]
    db = tmp_path / "c.sqlite"
    with llm.LLMClient(cfg(base_url=srv.url, concurrency=3), db) as c, pytest.raises(llm.LLMError, match="400"):
        c.chat_many(prompts, desc="first")                            # interrupted by a failing item
    srv.fail_on.clear()
    with llm.LLMClient(cfg(base_url=srv.url, concurrency=3), db) as c:
        out = c.chat_many(prompts + [prompts[0]], desc="resume")
        assert [r.text for r in out] == [f"echo: p{i}" for i in range(8)] + ["echo: p0"]
        assert [r.cache_key for r in out] == [c.cache_key(m) for m in prompts + [prompts[0]]]
        assert out[-1].cached
    assert srv.successes == {f"p{i}": 1 for i in range(8)}           # every item was answered exactly once


def test_stats_count_cached_tokens_once_and_equal_a_cold_run(fake, tmp_path):
    """A warm rerun reports the tokens and call time of what the cache served, so fresh + cached = the cold cost;
    the cache itself (keys, stored rows) is not changed by reading it."""
    import sqlite3
    srv = fake()
    db = tmp_path / "c.sqlite"
    batch = [user("a"), user("b"), user("a")]
    with llm.LLMClient(cfg(base_url=srv.url), db) as cold:
        cold.chat_many(batch)
        cold.chat(user("a"))                                           # a hit on a response it called itself
        s = cold.stats()
    assert (s["calls"], s["cache_hits"], s["prompt_tokens"], s["completion_tokens"]) == (2, 2, 10, 6)
    assert (s["cached_calls"], s["cached_prompt_tokens"], s["cached_completion_tokens"]) == (0, 0, 0)
    assert s["cached_seconds"] == 0.0 and s["seconds"] > 0
    rows = sqlite3.connect(db).execute("SELECT * FROM responses ORDER BY key").fetchall()
    with llm.LLMClient(cfg(base_url=srv.url), db) as warm:
        warm.chat_many(batch)
        warm.chat(user("b"))                                           # already counted: not counted again
        w = warm.stats()
    assert (w["calls"], w["cache_hits"], w["prompt_tokens"], w["completion_tokens"], w["seconds"]) == (0, 4, 0, 0, 0)
    assert (w["cached_calls"], w["cached_prompt_tokens"], w["cached_completion_tokens"]) == (2, 10, 6)
    assert w["cached_seconds"] == pytest.approx(s["seconds"])          # the original calls' time, from the cache
    assert w["calls"] + w["cached_calls"] == s["calls"]
    assert sqlite3.connect(db).execute("SELECT * FROM responses ORDER BY key").fetchall() == rows
    assert len(srv.requests) == 2


def test_cached_stats_tolerate_rows_without_usage_or_time(fake, tmp_path):
    import sqlite3
    srv = fake()
    db = tmp_path / "c.sqlite"
    with llm.LLMClient(cfg(base_url=srv.url), db) as c:
        c.chat(user("x"))
        key = c.cache_key(user("x"))
    con = sqlite3.connect(db)                                           # e.g. a server that reports no usage
    con.execute("UPDATE responses SET prompt_tokens=NULL, completion_tokens=NULL, seconds=NULL WHERE key=?", (key,))
    con.commit()
    with llm.LLMClient(cfg(base_url=srv.url), db) as c:
        assert c.chat(user("x")).cached
        s = c.stats()
    assert (s["cache_hits"], s["cached_calls"], s["cached_prompt_tokens"], s["cached_seconds"]) == (1, 1, 0, 0.0)


def test_cache_never_holds_the_api_key(fake, tmp_path, monkeypatch):
    sentinel = "sk-SENTINEL-d41d8cd98f00b204"
    monkeypatch.setenv("DART_TEST_LLM_KEY", sentinel)
    srv = fake()
    db = tmp_path / "c.sqlite"
    with llm.LLMClient(cfg(base_url=srv.url, api_key_env="DART_TEST_LLM_KEY"), db) as c:
        c.chat_many([user("a"), user("b")])
    assert sentinel in srv.requests[0]["headers"]["authorization"]   # the key was really used ...
    for f in tmp_path.iterdir():                                      # ... and is in no cache file (incl. -wal/-shm)
        assert sentinel.encode() not in f.read_bytes(), f
    # credentials in the endpoint URL are dropped before anything is keyed or stored
    assert llm.public_url("https://user:pw@host:8443/v1/?api-key=zz&api-version=1") == \
        "https://host:8443/v1?api-version=1"


def test_missing_key_variable_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv("DART_TEST_MISSING_KEY", raising=False)
    with pytest.raises(ParamsError, match="DART_TEST_MISSING_KEY"):
        llm.LLMClient(cfg(base_url="http://127.0.0.1:9/v1", api_key_env="DART_TEST_MISSING_KEY"),
                      tmp_path / "c.sqlite")


# ---- in-process llama.cpp -----------------------------------------------------------------------------------------
def test_llama_cpp_in_process(tmp_path):
    c_cfg = cfg(backend="llama_cpp", model=SMOL, n_ctx=512, max_tokens=8, concurrency=2)
    db = tmp_path / "c.sqlite"
    msgs = [user("Name a colour."), user("Name a fruit."), user("Name an animal.")]
    with llm.LLMClient(c_cfg, db) as c:
        r = c.chat(msgs[0])
        assert isinstance(r.text, str) and not r.cached and r.backend == "llama_cpp"
        assert r.usage["prompt_tokens"] > 0 and 0 < r.usage["completion_tokens"] <= 8
        out = c.chat_many(msgs, desc="llama")
        assert [o.cache_key for o in out] == [c.cache_key(m) for m in msgs]          # order preserved
        assert [o.cached for o in out] == [True, False, False] and out[0].text == r.text
        again = c.chat_many(msgs)
        assert all(o.cached for o in again) and [o.text for o in again] == [o.text for o in out]
        assert not c.chat(msgs[0], temperature=0.7).cached                          # new decoding -> miss
        assert (c.stats()["calls"], c.stats()["cache_hits"]) == (4, 4)
        with pytest.raises(ValueError, match="top_p"):
            c.chat(msgs[0], top_p=0.9)
        loaded = len(llm._LLAMAS)
        with llm.LLMClient(c_cfg, db) as judge:                                     # same GGUF: one shared load
            assert judge.chat(msgs[1]).cached and len(llm._LLAMAS) == loaded
    other = tmp_path / "other.gguf"                                                 # a different model file ...
    other.write_bytes(b"GGUF not really a model")
    with llm.LLMClient(c_cfg.model_copy(update={"model": str(other)}), db) as c3:   # ... never hits
        assert c3.cache_key(msgs[0]) != r.cache_key


def test_llama_cpp_reply_does_not_depend_on_the_call_before(tmp_path, monkeypatch):
    """Prefix reuse starts a prompt's evaluation only at multiples of REUSE_BLOCK, so a reply is the same whatever
    call came before it (docs/calibration.md §4), and the shared block is still reused."""
    import llama_cpp
    monkeypatch.setattr(llm, "REUSE_BLOCK", 32)
    llm.unload_models()
    starts = []                                     # where each prompt evaluation (more than one token) starts
    plain_eval = llama_cpp.Llama.eval

    def spy(self, tokens):
        if len(tokens) > 1:
            starts.append(self.n_tokens)
        return plain_eval(self, tokens)
    monkeypatch.setattr(llama_cpp.Llama, "eval", spy)
    c_cfg = cfg(backend="llama_cpp", model=SMOL, n_ctx=512, max_tokens=12)
    shared = "You are a careful assistant who answers briefly. " * 5                  # > 32 tokens in common
    msgs = [[{"role": "system", "content": shared}, {"role": "user", "content": q}]
            for q in ("Name a colour.", "Name a fruit and say why.", "Name an animal.")]
    texts = {}
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2]):
        with llm.LLMClient(c_cfg, tmp_path / f"{order}.sqlite") as c:               # fresh cache: every call runs
            for i in order:
                texts.setdefault(i, set()).add(c.chat(msgs[i]).text)
    assert all(len(t) == 1 for t in texts.values()), texts
    assert starts and all(s % 32 == 0 for s in starts), starts
    assert any(s > 0 for s in starts)                                                # the shared block was reused
    llm.unload_models()
