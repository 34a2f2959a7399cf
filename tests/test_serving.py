"""Student generation through an OpenAI-compatible server: a real llama.cpp server on 127.0.0.1 serving the student
(SmolLM2-135M-Instruct, the same GGUF the cpu profile converts), reached through ``cached_generate`` exactly as a
stage does; and vLLM's clear error where it is not installed."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest
from helpers import SMOLLM2

from dart_utils.core.params import GenerationParams, ServerParams, StudentParams
from dart_utils.lm import generation as G
from dart_utils.lm import student as M
from dart_utils.lm.offline_models import gguf_path

PROMPTS = [[{"role": "user", "content": q}] for q in (
    "What is the capital of France?", "Name three primary colours.", "What is 12 times 12?",
    "Say hello in Spanish.", "What colour is the sky on a clear day?", "How many legs does a spider have?")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path(SMOLLM2)),
                             "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
                             "--n_ctx", "2048", "--n_threads", "1", "--verbose", "false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"llama.cpp server exited: {proc.stderr.read()[-2000:]}")
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama.cpp server did not answer in 120 s")
    yield proc, url
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def student():
    """The shared conversion cache (runs/cache/models, as the pipeline's): the end-to-end tests converted it already;
    the conversion itself is tested in test_models.py."""
    return M.load_student(StudentParams(name="smollm2-135m-instruct", source="gguf", model_id=SMOLLM2,
                                          system_role=True, dtype="fp32"), None)


def _gp(url: str, **server) -> GenerationParams:
    return GenerationParams(max_new_tokens=24, do_sample=False, temperature=0.0, top_p=1.0, batch_size=6,
                            backend="openai", server=ServerParams(base_url=url, models={"base": "smollm2"},
                                                                  concurrency=3, **server))


def test_openai_backend_generates_through_a_live_server_and_caches(server, student, tmp_path):
    _, url = server
    model, tok = student
    gp = _gp(url)
    out = G.cached_generate(model, tok, PROMPTS, gp, seed=0, cache_dir=tmp_path, desc="served")
    assert not out.reused and len(out.texts) == len(PROMPTS) and all(t.strip() for t in out.texts)
    assert all(n > 0 for n in out.new_token_counts) and out.settings["backend"] == "openai"
    assert "144" in out.texts[2]                                      # the served model is the real student
    assert any(out.finished)                                          # short answers stop at the end of turn
    hf = G.cached_generate(model, tok, PROMPTS, gp.model_copy(update={"backend": "hf", "server": None}), seed=0,
                           cache_dir=tmp_path, desc="hf")
    assert hf.key != out.key                                          # the backend is in the key
    # the same greedy answers as transformers on the dequantised weights, up to the engines' numerics
    # Not compared with hf's texts: llama.cpp runs the Q4_1 weights with quantised activations, hf the dequantised
    # weights in fp32, and greedy SmolLM2-135M answers part within a few tokens. What must agree is the prompt: the
    # backend checks every reply's usage.prompt_tokens against the chat template's length (else it raises).
    again = G.cached_generate(model, tok, PROMPTS, _gp("http://127.0.0.1:9/v1"), seed=0, cache_dir=tmp_path)
    assert again.reused and again.texts == out.texts                 # the URL is not in the key: no server needed


def test_openai_backend_names_what_is_missing(server, student, tmp_path):
    _, url = server
    model, tok = student
    with pytest.raises(ValueError, match="no entry for adapter 'M_int'"):
        G.cached_generate(model, tok, PROMPTS[:1], _gp(url), seed=0, cache_dir=tmp_path, adapter="M_int",
                          adapter_dir=tmp_path)
    class Misrendered:                    # a server that reads another prompt than the chat template's is refused
        def __getattr__(self, name):
            return getattr(tok, name)

        def decode(self, ids, **kw):
            return "Note: " + tok.decode(ids, **kw)

    with pytest.raises(RuntimeError, match="prompt tokens where the student's chat template"):
        G.serving.generate_served(model, Misrendered(), [G.render_prompt_ids(tok, PROMPTS[0])],
                                  _gp(url), 0, None, None, [tok.eos_token_id], progress=False)
    with pytest.raises(ValueError, match="needs generation.server"):
        GenerationParams(max_new_tokens=8, do_sample=False, temperature=0.0, top_p=1.0, batch_size=1,
                         backend="openai")


def test_vllm_backend_says_how_to_get_it(student, tmp_path):
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed here: its missing-package error cannot be shown")
    except ImportError:
        pass
    model, tok = student
    gp = GenerationParams(max_new_tokens=8, do_sample=False, temperature=0.0, top_p=1.0, batch_size=1, backend="vllm")
    with pytest.raises(ImportError, match="optional extra"):
        G.cached_generate(model, tok, PROMPTS[:1], gp, seed=0, cache_dir=tmp_path)
