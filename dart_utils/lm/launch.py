"""LoRA training through ``accelerate launch`` (``training.launcher: accelerate``): one GPU, several GPUs (DDP) or
DeepSpeed ZeRO-3 with the same code, chosen by an accelerate config file (``params/accelerate/``).

Why: a notebook's process holds one device. Multi-GPU training needs one process per device, which is what
``accelerate launch`` starts (the alignment-handbook recipes run one script on 1 or 8 GPUs this way). The stage
calls ``training.train_lora`` as always; with the accelerate launcher, ``train_lora`` hands the run to
``launch_training`` here, which writes a spec (datasets as JSONL, tokenizer, parameters, the run's fingerprint and the
checkpoint to resume), starts ``accelerate launch --config_file <cfg> -m dart_utils.lm.launch <spec>``, streams its
output to the stage log and reads back the adapter and ``train_log.json`` the main process wrote. The child runs the
in-process path of ``train_lora`` (same Trainer, same checkpoints, same files), so both launchers give the same
adapter for the same inputs (tests/test_training.py compares them with ``accelerate launch --cpu``).

The child loads the base weights from where the parent's model came from (``config._name_or_path``: the converted
GGUF checkpoint, a local directory or a hub id in the offline cache). A model without such a source (built in memory,
or edited in memory) is saved under ``<output_dir>/launch/base`` first. The child checks that what it loaded is the
parent's model (dtype, shape and embedding statistics) before it trains.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["launch_training", "main"]

SPEC = "spec.json"
_PROGRESS = re.compile(r"step \d+/\d+: |train_lora: ")
_SAME_MODEL = ("model_type", "layers", "hidden", "vocab", "dtype", "embedding_sum", "embedding_norm")


def _base_source(model, launch_dir: Path) -> str:
    """Where the child reads the base weights: the model's own source when it has one, else a saved copy."""
    src = getattr(model.config, "_name_or_path", "") or ""
    edited = getattr(model, "dart_weight_edits", None)
    if src and not edited and (Path(src).expanduser().is_dir() or not Path(src).is_absolute()):
        return src
    out = launch_dir / "base"
    model.save_pretrained(str(out))
    return str(out)


def launch_training(model, tokenizer, train, tp, output_dir: Path, seed: int, eval_dataset, init_adapter,
                    system_role: bool, gradient_checkpointing, fused_loss, fp: str, resume: Path | None,
                    log: Callable[[str], Any] = print) -> None:
    """Run one ``train_lora`` under ``accelerate launch``; returns when the child has written the finished run."""
    from .student import identity

    if not tp.accelerate_config:
        raise ValueError("training.launcher is 'accelerate' but training.accelerate_config is not set; name a file "
                         "under params/accelerate/ (e.g. params/accelerate/single_gpu.yaml)")
    from ..core.params import PROJECT_ROOT

    cfg = Path(tp.accelerate_config)
    cfg = cfg if cfg.is_absolute() else PROJECT_ROOT / cfg
    if not cfg.is_file():
        raise FileNotFoundError(f"training.accelerate_config: {cfg} does not exist (relative paths are read from "
                                f"the project root; see params/accelerate/)")
    launch_dir = Path(output_dir) / "launch"
    launch_dir.mkdir(parents=True, exist_ok=True)
    train.to_json(str(launch_dir / "train.jsonl"))
    if eval_dataset is not None:
        eval_dataset.to_json(str(launch_dir / "eval.jsonl"))
    tokenizer.save_pretrained(str(launch_dir / "tokenizer"))
    spec = {
        "base": _base_source(model, launch_dir), "dtype": str(model.dtype).removeprefix("torch."),
        "identity": {k: identity(model)[k] for k in _SAME_MODEL},
        "tokenizer": str(launch_dir / "tokenizer"), "train": str(launch_dir / "train.jsonl"),
        "eval": str(launch_dir / "eval.jsonl") if eval_dataset is not None else None,
        "training": tp.model_dump(mode="json"), "output_dir": str(output_dir), "seed": seed,
        "init_adapter": str(init_adapter) if init_adapter else None, "system_role": system_role,
        "gradient_checkpointing": gradient_checkpointing, "fused_loss": fused_loss,
        "fingerprint": fp, "resume": str(resume) if resume else None,
    }
    (launch_dir / SPEC).write_text(json.dumps(spec, indent=2))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg),
           "-m", "dart_utils.lm.launch", str(launch_dir / SPEC)]
    log(f"train_lora: accelerate launch ({cfg}): {shlex.join(cmd)}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}   # the step lines are the progress
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        tail: list[str] = []
        for line in proc.stdout:
            tail = (tail + [line.rstrip("\n")])[-40:]
            shown = _PROGRESS.search(line)       # the step lines and train_lora's own messages reach the stage log
            if shown:
                log(line[shown.start():].rstrip("\n"))
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"accelerate launch failed (exit {rc}); rerun the stage to resume from the last "
                           f"checkpoint. Last output:\n" + "\n".join(tail))


def main(spec_file: str) -> None:
    """The launched process: load what the spec names and run the in-process ``train_lora``."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..core.params import TrainingParams
    from . import training
    from .student import identity

    spec = json.loads(Path(spec_file).read_text())
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    model = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=getattr(torch, spec["dtype"]))
    got = {k: identity(model)[k] for k in _SAME_MODEL}
    if got != spec["identity"]:
        raise RuntimeError(f"the launched process loaded another model from {spec['base']}: {got} != "
                           f"{spec['identity']}")
    train = datasets.Dataset.from_json(spec["train"])
    eval_ds = datasets.Dataset.from_json(spec["eval"]) if spec["eval"] else None
    tp = TrainingParams(**{**spec["training"], "launcher": "inprocess"})
    training.train_lora(model, tokenizer, train, tp, Path(spec["output_dir"]), seed=spec["seed"],
                        eval_dataset=eval_ds, init_adapter=spec["init_adapter"], system_role=spec["system_role"],
                        gradient_checkpointing=spec["gradient_checkpointing"], fused_loss=spec["fused_loss"],
                        launched=(spec["fingerprint"], Path(spec["resume"]) if spec["resume"] else None))


if __name__ == "__main__":
    main(sys.argv[1])
