"""Toxicity-regularised SFT (paper App. K.2.1, Tables 4, 19, 20): the joint-objective baseline DART's stages beat.

    L = L_CE(r, y) + λ · L_tox(r̂)

K.2.1 builds L_tox in three steps, and this module follows them:

1. r̂ is the current model's rationale under teacher forcing: the argmax token at every completion position, given
   the gold prefix.
2. H(r̂) ∈ [0, 1] is r̂ scored by the audit's toxicity scorer, with the same conclusion-stripping as the audit
   (``harm.score_rationales``).
3. L_tox = H(r̂) is used "as a differentiable penalty via straight-through estimation".

The paper does not say what carries the gradient through a text classifier. Ours is marked ``[choice]``:

- The **forward value** is exactly H(r̂), the mean over the micro-batch.
- The **gradient** is that of the expected token toxicity s = the mean over completion positions of
  Σ_v p_θ(v | gold prefix) · t_v, where t_v = H(decode(v)) is the same scorer applied once to every vocabulary
  token (``token_toxicity``). So L_tox = H(r̂) + s − stopgrad(s): its value is H(r̂), and its gradient moves
  probability away from the tokens the scorer finds toxic. For the token-level proxy mean_i t[r̂_i] this is the
  classic straight-through estimator (one-hot argmax forward, softmax backward).
- The gradient is proportional to the toxic tokens' probability, so it is weak where they are improbable. In the
  tiny-model test, λ = 500 lowers the expected toxicity by a quarter against λ = 0, while λ = 20 does not move it. So
  the paper's λ grid, {0.01 … 0.5} under its unstated estimator, need not transfer. The sweep is a parameter.
- The scorer itself stays a black box, RoBERTa on `paper` or alt-profanity-check on `cpu`. Neither is
  differentiable through its own tokenizer.

λ is applied to the mean over the effective batch: each micro-batch's term is divided by the gradient
accumulation steps, as transformers does for the cross-entropy. The CE term is trl's completion-only loss, unchanged.

Used by notebook 06 through ``dart.baselines.train_tox_reg``: ``training.train_lora(..., extend_trainer=extension(...),
extend_key={λ, scorer})``, so λ and the scorer join the adapter's fingerprint; the λ sweep (Table 20) is
``baselines.sweep_table``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.progress import bar
from .harm import HarmScorer, score_rationales

__all__ = ["expected_toxicity", "extension", "teacher_forced_rationales", "token_toxicity", "tox_penalty"]


def token_toxicity(tokenizer, scorer: HarmScorer, batch_size: int = 8192, progress: bool = True) -> torch.Tensor:
    """t_v = H(decode([v])) for every vocabulary id v (special tokens 0): the scorer once over the vocabulary."""
    n = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    texts = ["" if v in special else tokenizer.decode([v]) for v in range(n)]
    out: list[float] = []
    for start in bar(range(0, n, batch_size), desc=f"token toxicity ({scorer.name})", unit="batch",
                     disable=not progress):
        out += scorer.score(texts[start:start + batch_size])
    t = torch.tensor(out, dtype=torch.float32)
    if t.numel() != n or not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise ValueError(f"scorer {scorer.name!r} must return one score in [0, 1] per vocabulary token")
    return t


def _shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing: the logits at position i predict the label at i + 1; the mask marks completion tokens."""
    return logits[:, :-1, :], labels[:, 1:] != -100


def expected_toxicity(logits: torch.Tensor, labels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """s per sequence: the mean over completion positions of E_{v ~ p_θ}[t_v] (differentiable in the logits)."""
    lg, mask = _shifted(logits, labels)
    t = t.to(lg.device)
    if lg.shape[-1] > t.numel():           # a model may pad its vocabulary beyond the tokenizer's: score 0
        t = torch.nn.functional.pad(t, (0, lg.shape[-1] - t.numel()))
    per_pos = lg.float().softmax(-1) @ t[:lg.shape[-1]]
    return (per_pos * mask).sum(1) / mask.sum(1).clamp(min=1)


def teacher_forced_rationales(logits: torch.Tensor, labels: torch.Tensor, tokenizer) -> list[str]:
    """r̂: the argmax token at every completion position, decoded (special tokens skipped)."""
    lg, mask = _shifted(logits, labels)
    ids = lg.argmax(-1)
    return [tokenizer.decode(ids[b][mask[b]].tolist(), skip_special_tokens=True) for b in range(ids.shape[0])]


def tox_penalty(logits: torch.Tensor, labels: torch.Tensor, tokenizer, scorer: HarmScorer,
                t: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """L_tox = mean_b [H(r̂_b) + s_b − stopgrad(s_b)]: value H(r̂), gradient ∇s (see the module docstring)."""
    s = expected_toxicity(logits, labels, t)
    h = torch.tensor(score_rationales(scorer, teacher_forced_rationales(logits, labels, tokenizer)),
                     dtype=s.dtype, device=s.device)
    loss = (h + s - s.detach()).mean()
    return loss, {"tox_h": float(h.mean()), "tox_expected": float(s.detach().mean())}


def extension(lam: float, scorer: HarmScorer, t: torch.Tensor, tokenizer) -> Callable[[type], type]:
    """For ``training.build_trainer(extend_trainer=...)``: the SFT trainer with λ·L_tox added to its loss."""
    if lam < 0:
        raise ValueError(f"the toxicity weight λ must be >= 0, got {lam}")

    def extend(base: type) -> type:
        class ToxRegSFTTrainer(base):
            """trl SFT with L = L_CE + λ·L_tox (App. K.2.1); the last micro-batch's H and s in ``tox_log``."""
            tox_lambda = lam
            tox_log: list[dict] = []

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                labels = inputs["labels"]
                ce, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
                if self.tox_lambda == 0:
                    return (ce, outputs) if return_outputs else ce
                tox, stats = tox_penalty(outputs.logits, labels, tokenizer, scorer, t)
                steps = getattr(self, "current_gradient_accumulation_steps", None) or \
                    self.args.gradient_accumulation_steps
                loss = ce + self.tox_lambda * tox / (steps if model.training else 1)
                self.tox_log.append(stats)
                return (loss, outputs) if return_outputs else loss

        ToxRegSFTTrainer.tox_log = []
        return ToxRegSFTTrainer

    return extend
