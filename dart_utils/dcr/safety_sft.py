"""DCR Stage B, safety SFT (the Safety-Tuned LLaMAs recipe), run on the base model ("SFT only") and on the Stage A
model ("DCR + SFT"), with the refusal probability of two probe groups measured along the way.

Why: DCR aligns with standard SFT on D_general + D_safe (~5 % safety data; DCR_notes.md A3), and its central
observation is that during that SFT the refusal probability of seemingly-toxic prompts rises together with that of
toxic ones (A2, Figure 1). Both runs use the same data, order, LoRA settings and seed (``training.train_lora``); only
the starting weights differ, so a difference between the two models is Stage A's.

``RefusalProbe`` is a ``TrainerCallback`` that measures ``refusal.refusal_probability`` on the probe prompts at
step 0 and every ``every`` optimizer steps (under no_grad, in eval mode: training itself is unchanged); its records
travel with each training checkpoint, so a resumed run keeps the measurements made before the crash.
``train_sft`` keeps those measurements in ``dynamics.json`` beside the adapter, so a finished run is reused whole.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

import datasets
from transformers import TrainerCallback

from ..lm import training
from . import data
from .refusal import refusal_probability

__all__ = ["sft_rows", "RefusalProbe", "train_sft", "DYNAMICS_FILE"]

DYNAMICS_FILE = "dynamics.json"
PROBE_FILE = "refusal_probe.json"   # in each training checkpoint: the measurements up to it


def sft_rows(general: list[dict], safe: list[dict], seed: int, system: str | None = None) -> list[dict]:
    """D_general + D_safe as conversational prompt-completion rows, mixed in a seeded order (the Trainer shuffles
    again every epoch; this order is what is hashed and recorded)."""
    rows = data.sft_messages(general + safe, system)
    random.Random(seed).shuffle(rows)
    return rows


class RefusalProbe(TrainerCallback):
    """P(refusal opener) of each probe group at step 0 and every ``every`` optimizer steps (and at the last)."""

    def __init__(self, tokenizer, probes: dict[str, list[str]], every: int, system_role: bool = True):
        self.tokenizer, self.probes, self.every, self.system_role = tokenizer, probes, max(1, every), system_role
        self.records: list[dict] = []

    def _measure(self, model, step: int):
        for group, prompts in self.probes.items():
            p = refusal_probability(model, self.tokenizer, prompts, system_role=self.system_role)
            self.records.append({"step": step, "group": group, "mean": sum(p) / len(p), "per_prompt": p})

    def on_train_begin(self, args, state, control, model=None, **kw):
        if state.global_step == 0:
            self._measure(model, 0)
        else:   # resumed from a checkpoint: the measurements made before it were saved with it (on_save)
            saved = Path(args.output_dir) / f"checkpoint-{state.global_step}" / PROBE_FILE
            self.records = [r for r in json.loads(saved.read_text()) if r["step"] <= state.global_step]

    def on_save(self, args, state, control, **kw):
        (Path(args.output_dir) / f"checkpoint-{state.global_step}" / PROBE_FILE).write_text(json.dumps(self.records))

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._measure(model, state.global_step)


def train_sft(model, tokenizer, rows: list[dict], tp, output_dir: Path, seed: int, probes: dict[str, list[str]],
              every: int, system_role: bool = True, log: Callable[[str], Any] = print
              ) -> tuple[training.TrainResult, list[dict]]:
    """LoRA SFT of ``model`` on ``rows``; returns the training result and the probe's records. A finished run with
    the same inputs (and its ``dynamics.json`` for the same probes) is reused; without it the run is redone."""
    output_dir = Path(output_dir)
    dyn_file = output_dir / DYNAMICS_FILE
    probe_key = {"probes": probes, "every": every}
    stored = json.loads(dyn_file.read_text()) if dyn_file.is_file() else None
    if stored is None or stored.get("key") != probe_key:
        (output_dir / training.FINGERPRINT_FILE).unlink(missing_ok=True)   # the probe's numbers are missing
    probe = RefusalProbe(tokenizer, probes, every, system_role)
    ds = datasets.Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    result = training.train_lora(model, tokenizer, ds, tp, output_dir, seed=seed, log=log, system_role=system_role,
                                 callbacks=[probe])
    if result.skipped:
        return result, stored["records"]
    dyn_file.write_text(json.dumps({"key": probe_key, "records": probe.records}))
    return result, probe.records
