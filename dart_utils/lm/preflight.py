"""Checks that a stage's hardware, models and secrets are there, before it spends any time.

Why: the `paper` profile needs a GPU, the student weights (hub or a local copy) and the teacher's API key; a run
that lacks one of them should stop at once with everything that is missing and how to provide it, not an hour
later inside a training loop.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core.params import LLMParams, Params, StudentParams
from .offline_models import ModelNotAvailable, gguf_path


class PreflightError(RuntimeError):
    """What a stage needs and does not have, each with what to do."""


def _student_problem(sp: StudentParams, cache_dir: Path) -> str | None:
    if sp.source == "gguf":
        try:
            gguf_path(sp.model_id, cache_dir)
        except ModelNotAvailable as e:
            return str(e)
        return None
    if Path(sp.model_id).expanduser().is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache(sp.model_id, "config.json"), str):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return (f"student '{sp.model_id}' is neither a local directory nor in the Hugging Face cache, and the hub is "
                f"off (HF_HUB_OFFLINE=1). Download it where the hub is reachable (`hf download {sp.model_id} "
                f"--local-dir DIR`) and set student.model_id: DIR in a parameter file (PARAMS=...).")
    return None  # the hub may be reachable; loading will say so if not


def _llm_problem(role: str, cfg: LLMParams, cache_dir: Path) -> str | None:
    if cfg.backend == "llama_cpp":
        try:
            gguf_path(cfg.model, cache_dir)
        except ModelNotAvailable as e:
            return f"{role}: {e}"
        return None
    if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
        return (f"{role}: environment variable {cfg.api_key_env} (the API key for {cfg.base_url}, model {cfg.model}) "
                f"is not set. Export it; it is read from the environment only and never stored.")
    return None


def check(params: Params, cache_dir: Path, roles: tuple[str, ...] = ("student", "teacher")) -> list[str]:
    """Every problem found (empty when the stage can run)."""
    problems = []
    if params.run.require_gpu and not torch.cuda.is_available():
        problems.append(f"profile '{params.profile}' needs a CUDA GPU (run.require_gpu: true) and none is visible. "
                        f"Run it on a GPU machine, or use PROFILE=cpu here.")
    if "student" in roles:
        problems.append(_student_problem(params.student, cache_dir / "models"))
    if "dcr_model" in roles:   # the model DCR aligns (params.dcr.model)
        problems.append(_student_problem(params.dcr.model, cache_dir / "models"))
    for role in ("teacher", "judge", "judge_b"):
        if role in roles:
            problems.append(_llm_problem(role, getattr(params, role), cache_dir / "models"))
    return [p for p in problems if p]


def require(params: Params, cache_dir: Path, roles: tuple[str, ...] = ("student", "teacher")) -> None:
    problems = check(params, cache_dir, roles)
    if problems:
        raise PreflightError(f"this stage cannot run for profile '{params.profile}':\n- " + "\n- ".join(problems))
