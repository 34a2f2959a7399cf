"""DCR Stage A, contrastive refinement: push seemingly-toxic prompts away from toxic ones at layer l, tail frozen.

Why (DCR_notes.md A2-A3): under plain safety SFT the first-token kernel K(x', x) between a seemingly-toxic prompt x'
and a toxic prompt x stays high, so learning to refuse x also teaches refusing x'. Proposition 1 bounds that kernel by
the layer-l activation similarity h_x'^T Q h_x when every parameter after layer l is frozen; DCR lowers that
similarity with a Circle loss (Sun et al. 2020) before the safety SFT.

What is implemented (paper facts marked in DCR_notes.md section A; the rest is ours, ``[choice]`` in params/base.yaml):
- the representation h is the output of decoder block ``layer`` (0-based; null = the middle block) at the last
  prompt token (the position that emits the first response token) or the masked mean (``pooling``), with the
  student's chat template and generation header (as at inference);
- pytorch-metric-learning's ``CircleLoss(m, gamma)`` on those vectors with the subset as the class label: pairs within
  a subset are positives, pairs across are negatives (its default cosine similarity normalises them);
- a ``WeightedRandomSampler`` draws both subsets equally often, so each batch is balanced in expectation;
- only blocks <= ``layer`` can change (LoRA restricted to them with peft's ``layers_to_transform``, or full weights of
  those blocks): blocks after ``layer``, the final norm and the head are frozen. The forward pass stops at block
  ``layer`` (a hook raises after capturing its output): nothing after it contributes to the loss, so computing it
  would only cost time;
- trained by the Hugging Face ``Trainer`` (a subclass with its own ``compute_loss`` and sampler).

The refined model is ``apply_refinement(base, result.adapter_dir)``: the LoRA merged into the weights (or the saved
blocks loaded), and marked so that ``student.identity`` (cache keys of training and generation) tells it apart from
the base model.
"""
from __future__ import annotations

import gc
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.hashing import content_key, dir_hash
from ..lm.chat import render_prompt_ids
from ..lm.student import identity, mark_weights

__all__ = ["ContrastiveResult", "resolve_layer", "decoder_layers", "representations", "pair_similarities",
           "similarity_summary", "similarity_table", "probe_similarity",
           "train_contrastive", "apply_refinement", "trainable_names"]

FINGERPRINT_FILE = "fingerprint.txt"
LOG_FILE = "contrastive_log.json"
WEIGHTS = "refinement"            # subdirectory: a peft adapter (lora) or blocks.safetensors (full)


@dataclass
class ContrastiveResult:
    adapter_dir: Path
    log_history: list[dict]
    wall_time_s: float
    global_step: int
    layer: int
    skipped: bool = False
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- the layer
def _base(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks of a causal LM (Llama, Qwen2, Mistral, Gemma: ``model.model.layers``)."""
    inner = getattr(_base(model), "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise TypeError(f"cannot find the decoder blocks of {type(_base(model)).__name__} (expected .model.layers)")
    return layers


def resolve_layer(model, layer: int | None) -> int:
    """``layer`` checked against the model's depth; None = the middle block (n_layers // 2)."""
    n = len(decoder_layers(model))
    if layer is None:
        return n // 2
    if not 0 <= layer < n - 1:
        raise ValueError(f"dcr_contrastive.layer must be in [0, {n - 2}] for this {n}-block model (the last block "
                         f"would leave no frozen tail); got {layer}")
    return layer


class _Stop(Exception):
    """Raised by the hook once block l has run: the rest of the forward pass is not needed."""


class _Capture:
    """Forward hook on block l: keeps its output hidden states and stops the forward pass."""

    def __init__(self, model, layer: int):
        self.block = decoder_layers(model)[layer]
        self.out: torch.Tensor | None = None
        self.handle = None

    def __enter__(self):
        def hook(_module, _args, output):
            self.out = output[0] if isinstance(output, tuple) else output
            raise _Stop
        self.handle = self.block.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        return False

    def run(self, model, input_ids, attention_mask) -> torch.Tensor:
        self.out = None
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _Stop:
            pass
        if self.out is None:
            raise RuntimeError("the forward pass never reached the hooked block")
        return self.out


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[batch, seq, d] -> [batch, d]: the last real token (right padding) or the masked mean."""
    if pooling == "last":
        last = attention_mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling == "mean":
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
    raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")


def _collate(pad_id: int):
    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):              # right padding: positions start at 0 for every row
            ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, :len(r["input_ids"])] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        if "subset" in rows[0]:
            out["subset"] = torch.tensor([r["subset"] for r in rows], dtype=torch.long)
        return out
    return collate


def prompt_ids(tokenizer, prompts: list[str], system_role: bool = True) -> list[list[int]]:
    """Chat-templated prompt ids with the generation header (as at inference: the last token emits the answer)."""
    return [render_prompt_ids(tokenizer, [{"role": "user", "content": p}], system_role) for p in prompts]


@torch.no_grad()
def representations(model, tokenizer, prompts: list[str], layer: int, pooling: str, batch_size: int = 32,
                    system_role: bool = True) -> torch.Tensor:
    """Pooled layer-l representations [n, d] (float32) of ``prompts``, model in eval mode."""
    was_training = model.training
    model.eval()
    ids = prompt_ids(tokenizer, prompts, system_role)
    collate = _collate(tokenizer.pad_token_id)
    out = []
    with _Capture(model, layer) as cap:
        for i in range(0, len(ids), batch_size):
            b = collate([{"input_ids": x} for x in ids[i:i + batch_size]])
            h = cap.run(model, b["input_ids"], b["attention_mask"])
            out.append(pool(h, b["attention_mask"], pooling).float())
    model.train(was_training)
    return torch.cat(out)


def pair_similarities(a: torch.Tensor, b: torch.Tensor) -> dict[str, list[float]]:
    """Cosine similarity of every distinct pair within ``a`` (seemingly toxic), within ``b`` (toxic) and across."""
    a, b = torch.nn.functional.normalize(a.float(), dim=1), torch.nn.functional.normalize(b.float(), dim=1)

    def within(x):
        i, j = torch.triu_indices(len(x), len(x), offset=1)
        return (x @ x.T)[i, j]
    return {"within_seemingly": within(a).tolist(), "within_toxic": within(b).tolist(),
            "cross": (a @ b.T).flatten().tolist()}


def similarity_summary(pairs: dict[str, list[float]]) -> dict[str, float]:
    """Mean of each kind of pair, and the margin mean(within) - cross (larger = the groups are further apart)."""
    m = {k: float(sum(v) / len(v)) if v else float("nan") for k, v in pairs.items()}
    return m | {"margin": (m["within_seemingly"] + m["within_toxic"]) / 2 - m["cross"]}


def similarity_table(before: dict[str, dict], after: dict[str, dict]):
    """One row per probe x measure (``probe_similarity`` before and after Stage A): the mean cosine similarity of
    each kind of pair, the margin, and the share of each group that lies nearer the toxic training centroid."""
    import pandas as pd
    rows = []
    for probe in before:
        b, a = before[probe], after[probe]
        for kind in ("within_seemingly", "within_toxic", "cross", "margin"):
            rows.append({"probe": probe, "measure": f"cosine {kind}", "n": b["n_pairs"].get(kind),
                         "before": round(b["summary"][kind], 4), "after": round(a["summary"][kind], 4),
                         "change": round(a["summary"][kind] - b["summary"][kind], 4)})
        for kind, n in (("seemingly_nearer_toxic", "first group"), ("toxic_nearer_toxic", "second group")):
            rows.append({"probe": probe, "measure": f"share of {n} nearer the toxic centroid", "n": None,
                         "before": round(b[kind], 4), "after": round(a[kind], 4), "change": round(a[kind] - b[kind], 4)})
    return pd.DataFrame(rows)


KEEP_PAIRS = 5000    # pair similarities kept per probe and kind for figures (a seeded sample; the means use all)


def probe_similarity(model, tokenizer, probes: dict[str, tuple[list[str], list[str]]], layer: int, pooling: str,
                     anchors: tuple[list[str], list[str]], seed: int = 0, system_role: bool = True) -> dict:
    """Layer-l similarity of each probe (name -> (seemingly-toxic prompts, toxic prompts)) on ``model``: per probe the
    summary (``similarity_summary`` over every pair), ``n_pairs``, a seeded sample of the pair values (``pairs``),
    and where its prompts fall: the share of each group nearer (cosine) the toxic than the seemingly-toxic centroid of
    ``anchors`` (the Stage A training subsets). A Stage A that learned harmfulness sends held-out toxic prompts to the
    toxic side and benign ones to the other; one that learned the datasets' style sends them by style."""
    import random

    def reps(prompts):
        return torch.nn.functional.normalize(
            representations(model, tokenizer, prompts, layer, pooling, system_role=system_role), dim=1)
    c_seem = torch.nn.functional.normalize(reps(anchors[0]).mean(0), dim=0)
    c_tox = torch.nn.functional.normalize(reps(anchors[1]).mean(0), dim=0)
    out = {}
    for name, (a, b) in probes.items():
        ra, rb = reps(a), reps(b)
        pairs = pair_similarities(ra, rb)
        kept = {k: [round(x, 4) for x in (v if len(v) <= KEEP_PAIRS else
                                           random.Random(f"{seed}:{name}:{k}").sample(v, KEEP_PAIRS))]
                for k, v in pairs.items()}
        out[name] = {"summary": similarity_summary(pairs), "n_pairs": {k: len(v) for k, v in pairs.items()},
                     "pairs": kept,
                     "seemingly_nearer_toxic": float(((ra @ c_tox) > (ra @ c_seem)).float().mean()),
                     "toxic_nearer_toxic": float(((rb @ c_tox) > (rb @ c_seem)).float().mean())}
    return out


# ------------------------------------------------------------------------------------------------- freezing
def trainable_names(model, layer: int, trainable: str) -> list[str]:
    """Freeze everything, then unfreeze what Stage A may change: ``full`` = blocks 0..layer (and the input
    embeddings unless they are tied to the head, which must stay frozen); ``lora`` = nothing here (peft adds
    the LoRA weights on blocks 0..layer). Returns the unfrozen parameter names."""
    base = _base(model)
    for p in base.parameters():
        p.requires_grad_(False)
    if trainable == "lora":
        return []
    if trainable != "full":
        raise ValueError(f"trainable must be 'lora' or 'full', got {trainable!r}")
    names = []
    for i, block in enumerate(decoder_layers(base)[:layer + 1]):
        for n, p in block.named_parameters():
            p.requires_grad_(True)
            names.append(f"layers.{i}.{n}")
    emb = base.get_input_embeddings().weight
    out = base.get_output_embeddings()
    if out is None or out.weight.data_ptr() != emb.data_ptr():
        emb.requires_grad_(True)
        names.append("embed_tokens.weight")
    return names


def _lora(cp, layer: int):
    from peft import LoraConfig
    return LoraConfig(r=cp.lora_r, lora_alpha=cp.lora_alpha, lora_dropout=cp.lora_dropout,
                      target_modules=list(cp.target_modules), layers_to_transform=list(range(layer + 1)),
                      bias="none", task_type="CAUSAL_LM")


# ------------------------------------------------------------------------------------------------- training
def _trainer_class():
    from pytorch_metric_learning.losses import CircleLoss
    from torch.utils.data import WeightedRandomSampler
    from transformers import Trainer

    class CircleLossTrainer(Trainer):
        """Trainer whose loss is the Circle loss of the pooled layer-l representations (subset = class), with a
        sampler that draws both subsets equally often."""

        def __init__(self, *args, layer: int, pooling: str, circle_m: float, circle_gamma: float, **kw):
            super().__init__(*args, **kw)
            self.layer, self.pooling = layer, pooling
            self.circle = CircleLoss(m=circle_m, gamma=circle_gamma)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            with _Capture(model, self.layer) as cap:
                h = cap.run(model, inputs["input_ids"], inputs["attention_mask"])
            z = pool(h, inputs["attention_mask"], self.pooling).float()
            loss = self.circle(z, inputs["subset"])
            return (loss, {"embeddings": z}) if return_outputs else loss

        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            labels = [int(x) for x in ds["subset"]]
            counts = {c: labels.count(c) for c in set(labels)}
            weights = torch.tensor([1.0 / counts[c] for c in labels], dtype=torch.double)
            g = torch.Generator().manual_seed(self.args.seed)
            return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=g)

    return CircleLossTrainer


def fingerprint(model, tokenizer, seemingly: list[str], toxic: list[str], cp, layer: int, seed: int,
                system_role: bool) -> str:
    import hashlib
    return content_key({"params": cp.model_dump(mode="json"), "layer": layer, "seed": seed,
                        "seemingly": seemingly, "toxic": toxic, "system_role": system_role,
                        "model": identity(model),
                        "chat_template": hashlib.sha256(str(tokenizer.chat_template).encode()).hexdigest()[:16]})


def train_contrastive(model, tokenizer, seemingly: list[str], toxic: list[str], cp, output_dir: Path, seed: int,
                      system_role: bool = True, log: Callable[[str], Any] = print) -> ContrastiveResult:
    """Stage A on the bare base ``model``; saves the refinement to ``output_dir/refinement`` and a log. A finished
    run with the same fingerprint is reused. ``model`` is left as it was (LoRA unloaded, full weights restored,
    requires_grad as before); ``apply_refinement`` gives the refined model, ``probe_similarity`` measures either."""
    from peft import get_peft_model
    from transformers import TrainerCallback, TrainingArguments
    import datasets

    output_dir = Path(output_dir)
    layer = resolve_layer(model, cp.layer)
    fp = fingerprint(model, tokenizer, seemingly, toxic, cp, layer, seed, system_role)
    fp_file, weights_dir = output_dir / FINGERPRINT_FILE, output_dir / WEIGHTS
    if fp_file.is_file() and fp_file.read_text().strip() == fp and (output_dir / LOG_FILE).is_file():
        rec = json.loads((output_dir / LOG_FILE).read_text())
        log(f"train_contrastive: {weights_dir} is up to date (fingerprint {fp}); training skipped")
        return ContrastiveResult(weights_dir, rec["log_history"], rec["wall_time_s"], rec["global_step"], layer,
                                 skipped=True, info=rec)
    if not seemingly or not toxic:
        raise ValueError(f"Stage A needs both subsets; got {len(seemingly)} seemingly-toxic and {len(toxic)} toxic")
    output_dir.mkdir(parents=True, exist_ok=True)
    fp_file.unlink(missing_ok=True)
    ids = prompt_ids(tokenizer, seemingly + toxic, system_role)
    ds = datasets.Dataset.from_list([{"input_ids": x, "subset": int(i >= len(seemingly))} for i, x in enumerate(ids)])
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    unfrozen = trainable_names(model, layer, cp.trainable)
    originals = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}   # full: restored
    net = get_peft_model(model, _lora(cp, layer)) if cp.trainable == "lora" else model
    n_train = sum(p.numel() for p in net.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in net.parameters())
    log(f"train_contrastive: {len(seemingly)} seemingly-toxic + {len(toxic)} toxic prompts, layer {layer} of "
        f"{len(decoder_layers(model))}, pooling {cp.pooling}, {cp.trainable} ({n_train:,} / {n_total:,} trainable), "
        f"Circle loss m={cp.circle_m} gamma={cp.circle_gamma}, {cp.epochs} epoch(s) of batch {cp.batch_size}")

    class _Log(TrainerCallback):
        def on_log(self, args_, state, control, logs=None, **kw):
            if logs:
                log(f"step {state.global_step}/{state.max_steps}: "
                    f"{ {k: (round(v, 5) if isinstance(v, float) else v) for k, v in logs.items()} }")

    args = TrainingArguments(
        output_dir=str(output_dir / "trainer"), seed=seed, data_seed=seed, num_train_epochs=cp.epochs,
        learning_rate=cp.learning_rate, lr_scheduler_type="constant", per_device_train_batch_size=cp.batch_size,
        logging_steps=1, logging_first_step=True, report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(),
        bf16=False, fp16=False, remove_unused_columns=False, dataloader_num_workers=0, max_grad_norm=1.0)
    trainer = None
    t0 = time.perf_counter()
    try:
        trainer = _trainer_class()(model=net, args=args, train_dataset=ds, data_collator=_collate(tokenizer.pad_token_id),
                                   callbacks=[_Log()], layer=layer, pooling=cp.pooling, circle_m=cp.circle_m,
                                   circle_gamma=cp.circle_gamma)
        out = trainer.train()
        wall = time.perf_counter() - t0
        history = list(trainer.state.log_history)
        tmp = output_dir / f"{WEIGHTS}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if cp.trainable == "lora":
            net.save_pretrained(str(tmp))
        else:
            from safetensors.torch import save_file
            state = {n: p.detach().contiguous() for n, p in _base(model).named_parameters() if p.requires_grad}
            save_file(state, str(tmp / "blocks.safetensors"))
        (tmp / "refinement.json").write_text(json.dumps({"trainable": cp.trainable, "layer": layer}))
        shutil.rmtree(weights_dir, ignore_errors=True)
        tmp.rename(weights_dir)
    finally:
        if trainer is not None and cp.trainable == "lora" and hasattr(net, "unload") and \
                any("lora_" in n for n, _ in model.named_parameters()):
            net.unload()
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in originals:
                    p.copy_(originals[n])
                p.requires_grad_(requires_grad.get(n, False))
        model.eval()
        del trainer
        gc.collect()
    rec = {"fingerprint": fp, "log_history": history, "wall_time_s": wall,
           "global_step": out.global_step, "train_loss": out.training_loss, "layer": layer,
           "n_layers": len(decoder_layers(model)), "n_seemingly": len(seemingly), "n_toxic": len(toxic),
           "trainable_params": n_train, "total_params": n_total, "unfrozen": unfrozen[:5] + (["..."] if len(unfrozen) > 5 else []),
           "params": cp.model_dump(mode="json"), "seed": seed, "weights_sha": dir_hash(weights_dir)}
    (output_dir / LOG_FILE).write_text(json.dumps(rec, indent=2, default=str))
    fp_file.write_text(fp + "\n")
    log(f"train_contrastive: done in {wall:.1f} s, {out.global_step} steps, mean loss {out.training_loss:.4f}")
    return ContrastiveResult(weights_dir, rec["log_history"], wall, out.global_step, layer, info=rec)


def apply_refinement(model, weights_dir: Path):
    """The Stage A model: ``model`` (bare base) with the saved refinement merged in; returns the model to use.

    The model is marked (``student.mark_weights``) with the refinement's content hash, so caches keyed by
    ``student.identity`` never mistake it for the base model."""
    weights_dir = Path(weights_dir)
    meta = json.loads((weights_dir / "refinement.json").read_text())
    if meta["trainable"] == "lora":
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(weights_dir)).merge_and_unload()
    else:
        from safetensors.torch import load_file
        state = load_file(str(weights_dir / "blocks.safetensors"))
        missing = set(state) - {n for n, _ in _base(model).named_parameters()}
        if missing:
            raise ValueError(f"{weights_dir}: parameters {sorted(missing)[:3]} are not in this model")
        _base(model).load_state_dict(state, strict=False)
    mark_weights(model, f"dcr-stage-a:{dir_hash(weights_dir)}")
    return model.eval()
