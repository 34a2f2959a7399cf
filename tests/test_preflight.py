import pytest

from dart_utils.core import params as P
from dart_utils.core.artifacts import Run
from dart_utils.lm import preflight


def test_paper_profile_lists_everything_missing_here(monkeypatch):
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = P.load("paper")
    problems = preflight.check(params, Run(params).cache_dir, roles=("student", "teacher", "judge"))
    text = "\n".join(problems)
    assert "needs a CUDA GPU" in text
    assert "meta-llama/Meta-Llama-3-8B-Instruct" in text and "student.model_id" in text
    assert "DEEPSEEK_API_KEY" in text and "never stored" in text
    with pytest.raises(preflight.PreflightError, match="cannot run for profile 'paper'"):
        preflight.require(params, Run(params).cache_dir)


def test_key_present_is_fine(monkeypatch):
    monkeypatch.setenv("DEEPSEEK_API_KEY", "x")
    params = P.load("paper", overrides={"run": {"require_gpu": False}})
    assert not any("DEEPSEEK" in p for p in preflight.check(params, Run(params).cache_dir, roles=("teacher",)))


def test_cpu_profile_has_what_it_needs():
    params = P.load("cpu")
    assert preflight.check(params, Run(params).cache_dir, roles=("student", "teacher", "judge")) == []


def test_unknown_gguf_is_reported():
    params = P.load("cpu", overrides={"teacher": {"model": "no-such-model"}})
    [problem] = preflight.check(params, Run(params).cache_dir, roles=("teacher",))
    assert "unknown GGUF model 'no-such-model'" in problem
