"""LoRA fine-tuning of the student on teacher rationales (Stage I, DART's M_int; Stage III, M_DART) with trl.

Why: paper §3.1 / App. C: LoRA (r 16, alpha 32, dropout 0.05) on attention and MLP projections, lr 2e-4, effective
batch 16, the same settings for both stages, loss on the assistant answer only. Every value comes from
``TrainingParams``; nothing is hard-coded here (the reference ignored its own LoRA config block, §4.3).

The dataset is conversational prompt-completion: ``prompt`` = [system, user] messages, ``completion`` = [assistant].
trl's ``SFTTrainer`` tokenizes ``prompt`` with the generation header and ``prompt + completion`` in full (chat template,
no extra special tokens) and sets the labels of the prompt tokens to -100 (``completion_only_loss`` defaults to True
for prompt-completion data; tests/test_training.py checks it). The completion span includes the template's end-of-turn
token, so the model learns to stop.

Divergences from the authors' code, on purpose: sequences longer than ``max_length`` are cut at the END (trl's only
truncation mode) instead of cutting the prompt from the left; examples whose prompt alone fills ``max_length`` are
dropped by trl. Both are counted in ``train_log.json`` (``n_dropped``, ``n_at_max_length``). No validation-based
checkpoint selection: the final adapter is saved (an eval set, if given, is scored after every epoch and logged).

LoRA wraps the base model object IN PLACE (peft injects its layers into it). So that one loaded model can serve every
stage, train_lora by default unloads the LoRA layers after saving the adapter: the caller's model is the plain base
model again (same weights, eval mode). To use the trained model, attach the saved adapter
(``models.attach_adapter(model, result.adapter_dir, name="M_int")``), or pass ``keep_adapter=True`` and use
``result.model`` (the trained ``PeftModel``). A model that already carries adapters is refused (LoRA would be wrapped
twice); ``PeftModel.unload()`` gives the base back.

Cheap reruns: a finished run writes ``train_fingerprint.txt`` last; a call whose fingerprint (training parameters,
seed, data content, eval data, init adapter, base model identity, chat template) matches skips training and returns the
recorded result.

Resumable runs: with ``checkpoint_steps`` set, the Trainer saves a checkpoint (adapter, optimizer, scheduler, RNG
states, data position) every n steps under ``output_dir/trainer/`` (only the latest is kept), beside ``run_key.txt``,
the fingerprint of the run it belongs to. A call after a crash with the same fingerprint resumes from the latest
checkpoint (transformers' ``resume_from_checkpoint``) and ends with the adapter an uninterrupted run gives
(tests/test_training.py kills a run and compares); a checkpoint of another fingerprint is deleted, never resumed.
The checkpoints are removed once the adapter is saved.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.hashing import content_key, dir_hash
from ..core.params import TrainingParams
from .chat import merge_system
from .student import identity, resolve_precision

__all__ = ["TrainResult", "train_lora", "build_trainer", "lora_config", "fingerprint", "dataset_hash", "check_dataset"]

FINGERPRINT_FILE = "train_fingerprint.txt"
RUN_KEY_FILE = "run_key.txt"       # in output_dir/trainer/: the fingerprint its checkpoints belong to
NOT_FINGERPRINTED = {"checkpoint_steps", "report_to", "launcher", "accelerate_config"}   # how, not what, it trains
LOG_FILE = "train_log.json"
ADAPTER = "adapter"


@dataclass
class TrainResult:
    adapter_dir: Path
    log_history: list[dict]
    wall_time_s: float
    global_step: int
    train_loss: float | None
    skipped: bool = False            # True: a finished run with the same fingerprint was reused
    info: dict[str, Any] = field(default_factory=dict)   # the rest of train_log.json (counts, precision, ...)
    model: Any = field(default=None, repr=False)          # the trained PeftModel, only with keep_adapter=True


# ------------------------------------------------------------------------------------------------- fingerprints
def dataset_hash(ds) -> str | None:
    """Content hash of the trained columns (``datasets``' own fingerprint is random for in-memory datasets)."""
    if ds is None:
        return None
    return content_key(ds.select_columns(["prompt", "completion"]).to_list())


def _model_identity(model, tokenizer) -> dict:
    """The base weights (`student.identity`: local checkpoint content or hub commit, dtype, embedding statistics)
    and the chat template (not mutated by training)."""
    return {**identity(model),
            "chat_template": hashlib.sha256(str(tokenizer.chat_template).encode()).hexdigest()[:16]}


def fingerprint(model, tokenizer, train, tp: TrainingParams, seed: int, eval_dataset=None,
                init_adapter: Path | None = None, system_role: bool = True, extra: dict | None = None) -> str:
    return content_key({
        "training": tp.model_dump(mode="json", exclude=NOT_FINGERPRINTED), "precision": resolve_precision(tp.precision), "seed": seed,
        "train": dataset_hash(train), "eval": dataset_hash(eval_dataset), "init_adapter": dir_hash(init_adapter, "adapter_*"),
        "system_role": system_role, "model": _model_identity(model, tokenizer), "extra": extra or {},
    })


# ------------------------------------------------------------------------------------------------- data
def check_dataset(ds, name: str = "train") -> None:
    """Conversational prompt-completion rows: prompt = list of {role, content}, completion = [one assistant msg]."""
    missing = {"prompt", "completion"} - set(ds.column_names)
    if missing:
        raise ValueError(f"{name} dataset lacks column(s) {sorted(missing)}; expected conversational "
                         f"prompt-completion rows (prompt: [system, user] messages, completion: [assistant message])")
    if len(ds) == 0:
        raise ValueError(f"{name} dataset is empty")
    for i, row in enumerate(ds.select_columns(["prompt", "completion"])):
        p, c = row["prompt"], row["completion"]
        if not (isinstance(p, list) and p and all(isinstance(m, dict) and "role" in m and "content" in m for m in p)):
            raise ValueError(f"{name} row {i}: 'prompt' must be a non-empty list of {{role, content}} messages")
        if not (isinstance(c, list) and len(c) == 1 and c[0].get("role") == "assistant"):
            raise ValueError(f"{name} row {i}: 'completion' must be a list holding one assistant message")
        if p[-1]["role"] != "user":
            raise ValueError(f"{name} row {i}: the prompt must end with the user turn, got {p[-1]['role']!r}")


def _prepare(ds, system_role: bool):
    ds = ds.select_columns(["prompt", "completion"])
    if not system_role:
        ds = ds.map(lambda r: {"prompt": merge_system(r["prompt"])}, desc="merge system into user turn")
    return ds


# ------------------------------------------------------------------------------------------------- training
def lora_config(tp: TrainingParams):
    from peft import LoraConfig
    return LoraConfig(r=tp.lora_r, lora_alpha=tp.lora_alpha, lora_dropout=tp.lora_dropout,
                      target_modules=list(tp.target_modules), bias="none", task_type="CAUSAL_LM")


def _load_recorded(output_dir: Path) -> TrainResult:
    rec = json.loads((output_dir / LOG_FILE).read_text())
    info = {k: v for k, v in rec.items() if k not in ("log_history", "wall_time_s", "global_step", "train_loss")}
    return TrainResult(adapter_dir=output_dir / ADAPTER, log_history=rec["log_history"],
                       wall_time_s=rec["wall_time_s"], global_step=rec["global_step"], train_loss=rec["train_loss"],
                       skipped=True, info=info)


def _versions() -> dict:
    import peft
    import transformers
    import trl
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "trl": trl.__version__}


def _has_adapters(model) -> bool:
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer
    return isinstance(model, PeftModel) or any(isinstance(m, BaseTunerLayer) for m in model.modules())


def _strip_adapters(model) -> None:
    """Replace every LoRA-wrapped layer by its base layer (what ``PeftModel.unload`` does), for failure paths."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and name:
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], module.get_base_layer())
    if "peft_config" in vars(model):
        del model.peft_config


def _trainer_class(fused_loss: bool):
    from transformers import Trainer
    from trl import SFTTrainer

    class DartSFTTrainer(SFTTrainer):
        """trl's SFTTrainer; with ``fused_loss=False`` the loss is the model's own cross-entropy over full logits.

        trl 1.16 computes the loss through a chunked "fused LM head" (no full logits: saves GPU memory, and adds the
        entropy / token-accuracy metrics). On the CPU it measured ~2-4 s slower per step of SmolLM2-135M at 4 x 265
        tokens. Both are the same quantity: the sum of completion-token NLL over the whole accumulated batch divided by
        its number of completion tokens (``num_items_in_batch``); the labels (-100 on the prompt) are trl's either way.
        """
        use_fused_loss = fused_loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.use_fused_loss:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return DartSFTTrainer


def build_trainer(model, tokenizer, train, tp: TrainingParams, output_dir: Path, seed: int, eval_dataset=None,
                  init_adapter: Path | None = None, system_role: bool = True,
                  gradient_checkpointing: bool | None = None, callbacks: list | None = None,
                  fused_loss: bool | None = None, extend_trainer: Callable[[type], type] | None = None):
    """The configured ``SFTTrainer`` (LoRA attached to ``model`` in place); used by ``train_lora`` and the tests.
    ``extend_trainer`` subclasses the trainer class (a baseline's extra loss term, e.g. ``dart.tox_reg``); it needs
    the full logits, so the fused LM-head loss is off with it.

    Effective batch = per_device_batch_size x gradient_accumulation_steps x processes = batch_size (under accelerate
    launch with several processes, the accumulation shrinks so that the effective batch stays the profile's);
    bf16 autocast where ``resolve_precision`` says so; ``use_cpu`` without CUDA; logging every step; a checkpoint
    every ``checkpoint_steps`` (none when null) under ``output_dir/trainer``.
    ``gradient_checkpointing`` and ``fused_loss`` (trl's chunked LM-head loss): None = on with CUDA, off on CPU.
    """
    from peft import PeftModel
    from trl import SFTConfig

    if _has_adapters(model):
        raise TypeError("train_lora needs the bare base model, got a model with adapters attached; pass the base "
                        "model (PeftModel.unload()) and use init_adapter= to continue training a saved adapter")
    world = int(os.environ.get("WORLD_SIZE", "1"))   # processes started by accelerate launch (DDP)
    if tp.batch_size % (tp.per_device_batch_size * world):
        raise ValueError(f"training.batch_size ({tp.batch_size}) must be a multiple of "
                         f"training.per_device_batch_size ({tp.per_device_batch_size}) x {world} process(es)")
    if not 0 <= tp.warmup_ratio < 1:
        raise ValueError(f"training.warmup_ratio must be in [0, 1), got {tp.warmup_ratio}")
    if init_adapter is not None and not (Path(init_adapter) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"init_adapter {init_adapter} holds no saved adapter (adapter_config.json missing)")
    check_dataset(train, "train")
    if eval_dataset is not None:
        check_dataset(eval_dataset, "eval")

    use_cuda = torch.cuda.is_available()
    if gradient_checkpointing is None:
        gradient_checkpointing = use_cuda
    if fused_loss is None:
        fused_loss = use_cuda and extend_trainer is None
    if fused_loss and extend_trainer is not None:
        raise ValueError("extend_trainer needs the full logits: leave fused_loss unset or False")
    precision = resolve_precision(tp.precision)
    args = SFTConfig(
        output_dir=str(Path(output_dir) / "trainer"), seed=seed, data_seed=seed,
        num_train_epochs=tp.epochs, learning_rate=tp.learning_rate, lr_scheduler_type=tp.lr_scheduler,
        warmup_steps=tp.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        per_device_train_batch_size=tp.per_device_batch_size, per_device_eval_batch_size=tp.per_device_batch_size,
        gradient_accumulation_steps=tp.batch_size // (tp.per_device_batch_size * world), max_length=tp.max_length,
        bf16=precision == "bf16", fp16=False, use_cpu=not use_cuda,
        activation_checkpointing=gradient_checkpointing,   # the transformers 5 name of gradient_checkpointing
        logging_steps=1, logging_first_step=True, report_to=tp.report_to,
        save_strategy="steps" if tp.checkpoint_steps else "no", save_steps=tp.checkpoint_steps or 500,
        save_total_limit=1, eval_strategy="epoch" if eval_dataset is not None else "no",
        completion_only_loss=None,     # None = trl's default: completion-only for prompt-completion data
        dataloader_num_workers=0,
    )
    if init_adapter is not None:       # Stage III: the saved adapter, trainable; new optimizer and schedule
        model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
        peft_config = None
    else:
        peft_config = lora_config(tp)
    eval_ds = _prepare(eval_dataset, system_role) if eval_dataset is not None else None
    cls = _trainer_class(fused_loss)
    if extend_trainer is not None:
        cls = extend_trainer(cls)
    trainer = cls(model=model, args=args, train_dataset=_prepare(train, system_role),
                                         eval_dataset=eval_ds, processing_class=tokenizer, peft_config=peft_config,
                                         callbacks=callbacks or [])
    if not trainer.completion_only_loss:   # guard: the prompt must never be trained on
        raise RuntimeError("trl did not enable completion-only loss for the prompt-completion dataset")
    return trainer


def _resumable_checkpoint(output_dir: Path, fp: str, log: Callable[[str], Any]) -> Path | None:
    """The latest checkpoint of an unfinished run with fingerprint ``fp``, or None; anything else in
    ``output_dir/trainer`` (another run's checkpoints) is deleted, and the run key is written for this run."""
    from transformers.trainer_utils import get_last_checkpoint

    trainer_dir = output_dir / "trainer"
    key_file = trainer_dir / RUN_KEY_FILE
    if trainer_dir.is_dir():
        same_run = key_file.is_file() and key_file.read_text().strip() == fp
        last = get_last_checkpoint(str(trainer_dir)) if same_run else None
        if last:
            log(f"train_lora: resuming the unfinished run from {last}")
            return Path(last)
        shutil.rmtree(trainer_dir)
    trainer_dir.mkdir(parents=True)
    key_file.write_text(fp + "\n")
    return None


def train_lora(model, tokenizer, train, tp: TrainingParams, output_dir: Path, seed: int, eval_dataset=None,
               init_adapter: Path | None = None, log: Callable[[str], Any] = print, system_role: bool = True,
               gradient_checkpointing: bool | None = None, keep_adapter: bool = False,
               fused_loss: bool | None = None, callbacks: list | None = None,
               launched: tuple[str, Path | None] | None = None,
               extend_trainer: Callable[[type], type] | None = None,
               extend_key: dict | None = None) -> TrainResult:
    """Train a LoRA adapter on ``train`` (conversational prompt-completion) and save it to ``output_dir/adapter``.

    ``init_adapter``: continue training a saved adapter (Stage III from Stage I) with a fresh optimizer and schedule;
    the LoRA shape then comes from the saved adapter. ``system_role=False`` merges the system message into the user
    turn (as ``generation.generate`` does). ``gradient_checkpointing``: None = on with CUDA (large models, the
    authors' setting), off on CPU (small models: faster, and memory is not the limit there). ``fused_loss``: trl's
    chunked LM-head loss; None = on with CUDA, off on CPU (same loss, faster there; see ``_trainer_class``).

    ``keep_adapter=False`` (default): ``model`` is left as the plain base model; attach the saved adapter when needed.
    ``keep_adapter=True``: ``result.model`` is the trained ``PeftModel`` (adapter "default", eval mode) wrapping
    ``model``; use it (e.g. ``generation.use_adapter(result.model, None)`` for M0) and ``result.model.unload()``
    before training again. Output files: ``adapter/`` (adapter + tokenizer), ``train_log.json``,
    ``train_fingerprint.txt`` (written last). ``callbacks``: more ``TrainerCallback``s; they must not change
    training (e.g. a probe that measures the model under no_grad), since they are not in the fingerprint.
    ``extend_trainer`` (see ``build_trainer``) changes the loss, so it needs ``extend_key``: a JSON-able description
    of everything the extension depends on (e.g. λ and the scorer), which joins the fingerprint.

    ``tp.launcher == "accelerate"``: the run is handed to ``launch.launch_training`` (``accelerate launch`` with
    ``tp.accelerate_config``); it writes the same files, read back here. ``launched`` is set only inside that launched
    process: (the parent's fingerprint, the checkpoint to resume), decided by the parent before the launch.
    """
    from peft import PeftModel
    from transformers import TrainerCallback

    from .student import attach_adapter

    if _has_adapters(model):
        raise TypeError("train_lora needs the bare base model, got a model with adapters attached; pass the base "
                        "model (PeftModel.unload()) and use init_adapter= to continue training a saved adapter")
    output_dir = Path(output_dir)
    if len(train) == 0:
        raise ValueError(f"train_lora: the training set for {output_dir} is empty: no example to train on (e.g. "
                         "the teacher had no accepted target; see the stage's rejection table)")
    adapter_dir = output_dir / ADAPTER
    init_adapter = Path(init_adapter) if init_adapter is not None else None
    if extend_trainer is not None and not extend_key:
        raise ValueError("train_lora(extend_trainer=...) needs extend_key= (what the extension's loss depends on), "
                         "so that a changed extension retrains instead of reusing the adapter")
    if extend_trainer is not None and tp.launcher == "accelerate" and not launched:
        raise ValueError("training.launcher 'accelerate' cannot carry extend_trainer into the launched processes; "
                         "use launcher: inprocess for this run")
    fp = launched[0] if launched else fingerprint(model, tokenizer, train, tp, seed, eval_dataset, init_adapter,
                                                  system_role, extra={"extend": extend_key} if extend_key else None)
    fp_file = output_dir / FINGERPRINT_FILE
    if not launched and adapter_dir.is_dir() and fp_file.is_file() and fp_file.read_text().strip() == fp \
            and (output_dir / LOG_FILE).is_file():
        log(f"train_lora: {adapter_dir} is up to date (fingerprint {fp}); training skipped")
        result = _load_recorded(output_dir)
        if keep_adapter:
            result.model = attach_adapter(model, adapter_dir)
        return result
    output_dir.mkdir(parents=True, exist_ok=True)
    if launched:
        resume = launched[1]
    else:
        fp_file.unlink(missing_ok=True)   # from here on, output_dir does not hold a finished run
        resume = _resumable_checkpoint(output_dir, fp, log)
    if tp.launcher == "accelerate" and not launched:
        if callbacks:
            raise ValueError("training.launcher 'accelerate' cannot carry callbacks into the launched processes "
                             f"({[type(c).__name__ for c in callbacks]}); use launcher: inprocess for this run")
        from .launch import launch_training
        launch_training(model, tokenizer, train, tp, output_dir, seed, eval_dataset, init_adapter, system_role,
                        gradient_checkpointing, fused_loss, fp, resume, log)
        if not (fp_file.is_file() and fp_file.read_text().strip() == fp):
            raise RuntimeError(f"accelerate launch ended without a finished run in {output_dir} "
                               f"({FINGERPRINT_FILE} missing or of another run)")
        result = _load_recorded(output_dir)
        result.skipped = False
        if keep_adapter:
            result.model = attach_adapter(model, adapter_dir)
        return result

    class _Log(TrainerCallback):
        def on_log(self, args_, state, control, logs=None, **kw):
            if logs:
                shown = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in logs.items()}
                log(f"step {state.global_step}/{state.max_steps}: {shown}")

    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    use_cache = getattr(model.config, "use_cache", None)
    had_own_forward = "forward" in vars(model)   # trl patches model.forward (fused LM head) on the instance
    trainer = None
    ok = False
    try:
        trainer = build_trainer(model, tokenizer, train, tp, output_dir, seed, eval_dataset, init_adapter,
                                system_role, gradient_checkpointing, callbacks=[_Log(), *(callbacks or [])],
                                fused_loss=fused_loss, extend_trainer=extend_trainer)
        args = trainer.args
        precision = "bf16" if args.bf16 else "fp32"
        accumulation = args.gradient_accumulation_steps
        prepared = trainer.train_dataset
        n_dropped = len(train) - len(prepared)
        lengths = [len(ids) for ids in prepared["input_ids"]]
        n_at_max = sum(1 for n in lengths if n >= tp.max_length)
        if n_dropped or n_at_max:
            log(f"train_lora: {n_at_max} example(s) reach max_length={tp.max_length} (completion end cut), "
                f"{n_dropped} dropped (prompt alone >= max_length)")
        peft_cfg = trainer.model.peft_config["default"]
        if init_adapter is not None and (peft_cfg.r != tp.lora_r
                                         or set(peft_cfg.target_modules or []) != set(tp.target_modules)):
            log(f"train_lora: init adapter has r={peft_cfg.r}, targets={sorted(peft_cfg.target_modules)}; its "
                f"shape is kept (training.lora_* apply to new adapters only)")
        trainable, total = trainer.model.get_nb_trainable_parameters()
        log(f"train_lora: {len(prepared)} examples, effective batch {tp.batch_size} = {tp.per_device_batch_size} x "
            f"{accumulation}{f' x {args.world_size} processes' if args.world_size > 1 else ''}, {tp.epochs} epoch(s), precision {precision}, LoRA trainable {trainable:,} / {total:,}"
            f"{', from ' + str(init_adapter) if init_adapter else ''}")
        t0 = time.perf_counter()
        out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        wall = time.perf_counter() - t0
        if not trainer.is_world_process_zero():   # several processes (accelerate launch): the main one writes
            ok = True
            return TrainResult(adapter_dir=adapter_dir, log_history=trainer.state.log_history, wall_time_s=wall,
                               global_step=out.global_step, train_loss=out.training_loss)

        tmp = output_dir / f"{ADAPTER}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(adapter_dir, ignore_errors=True)
        tmp.rename(adapter_dir)
        rec = {
            "fingerprint": fp, "log_history": trainer.state.log_history, "wall_time_s": wall,
            "global_step": out.global_step, "train_loss": out.training_loss,
            "seconds_per_step": wall / max(out.global_step, 1),
            "training": tp.model_dump(mode="json"), "seed": seed, "precision": precision, "extend": extend_key,
            "gradient_accumulation_steps": accumulation, "processes": args.world_size,
            "resumed_from": resume.name if resume else None,   # wall_time_s then covers the resumed part only "gradient_checkpointing": bool(args.activation_checkpointing),
            "fused_loss": trainer.use_fused_loss,
            "device": "cpu" if args.use_cpu else "cuda", "optimizer": str(args.optim),
            "warmup_steps": args.get_warmup_steps(out.global_step),
            "n_train_examples": len(train), "n_trained_examples": len(prepared), "n_dropped": n_dropped,
            "n_at_max_length": n_at_max, "tokens_per_example_mean": sum(lengths) / len(lengths),
            "tokens_per_example_max": max(lengths),
            "n_eval_examples": len(eval_dataset) if eval_dataset is not None else 0,
            "init_adapter": str(init_adapter) if init_adapter else None, "system_role": system_role,
            "lora": {"r": peft_cfg.r, "alpha": peft_cfg.lora_alpha, "dropout": peft_cfg.lora_dropout,
                     "target_modules": sorted(peft_cfg.target_modules)},
            "lora_trainable_params": trainable, "total_params": total,
            "train_data_sha256": dataset_hash(train), "versions": _versions(),
        }
        (output_dir / LOG_FILE).write_text(json.dumps(rec, indent=2, default=str))
        fp_file.write_text(fp + "\n")   # last: marks the run as finished
        for done in (output_dir / "trainer").glob("checkpoint-*"):   # checkpoints are only for an unfinished run
            shutil.rmtree(done, ignore_errors=True)                    # (report_to logs, if any, stay)
        log(f"train_lora: done in {wall:.1f} s, {out.global_step} steps, train loss {out.training_loss:.4f}; "
            f"adapter -> {adapter_dir}")
        ok = True
    finally:
        pm = trainer.model if trainer is not None and isinstance(trainer.model, PeftModel) else None
        if trainer is not None and trainer.args.activation_checkpointing:
            target = pm.get_base_model() if pm is not None else model
            if hasattr(target, "activation_checkpointing_disable"):
                target.activation_checkpointing_disable()
            else:
                target.gradient_checkpointing_disable()
            try:
                target.disable_input_require_grads()
            except Exception:
                pass
        if not (ok and keep_adapter):
            if pm is not None:
                pm.unload()   # LoRA layers out: the caller's model is the plain base model again
            if _has_adapters(model):   # failed before the trainer existed (e.g. bad init adapter)
                _strip_adapters(model)
        if not had_own_forward and "forward" in vars(model):
            del model.forward        # drop trl's instance patch (only used in training): the class forward again
        for n, p in model.named_parameters():
            if n in requires_grad:
                p.requires_grad_(requires_grad[n])
        if use_cache is not None:
            model.config.use_cache = use_cache
        model.eval()
        del trainer
        gc.collect()
    info = {k: v for k, v in rec.items() if k not in ("log_history", "wall_time_s", "global_step", "train_loss")}
    result = TrainResult(adapter_dir=adapter_dir, log_history=rec["log_history"], wall_time_s=wall,
                         global_step=out.global_step, train_loss=out.training_loss, info=info)
    if keep_adapter:
        pm.eval()
        result.model = pm
    return result
