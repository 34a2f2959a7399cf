"""DCR's learning-dynamics measure: the normalised empirical-NTK similarity of the first answer token.

Why (DCR_notes.md A2): training on (x, y) moves the first-token logits z(x') of another prompt x' in proportion to
the empirical NTK K(x', x) = J(x') J(x)^T, J = dz/dtheta. DCR reports ||K(x', x)||_F / ||K(x', x')||_F: how strongly an
update made for a toxic prompt x drags a seemingly-toxic x', relative to x' itself. Under plain SFT it stays high;
DCR is meant to lower it.

What is computed here ([choice] where DCR is silent or unknown):
- z(x): the logits at the last prompt token (the one that emits the first answer token), chat template applied;
- only the ``topk`` most likely next tokens of each prompt enter (K is then topk x topk; the DCGS audit scripts that
  ran DCR's code used top-10);
- theta: the base weight matrices of the last ``last_blocks`` decoder blocks (DCGS: "last 2 layers"; LoRA weights
  are not in theta, so every model is measured over the same parameters); everything else is a constant;
- J via ``torch.func.jacrev`` over ``functional_call``; each J row is compressed by a seeded count sketch to
  ``sketch_dim`` coordinates, which keeps inner products unbiased (relative error ~ 1/sqrt(sketch_dim)) and the
  memory small;
- the similarity is averaged over every (seemingly-toxic x', toxic x) pair; the same quantity over pairs of two
  different seemingly-toxic prompts is the within-group reference.
"""
from __future__ import annotations

import torch

from ..lm.chat import render_prompt_ids
from .contrastive import decoder_layers

__all__ = ["ntk_params", "first_token_jacobians", "ntk_similarity"]


def ntk_params(model, last_blocks: int) -> list[str]:
    """Names of the 2-D base weights (matrices) of the last ``last_blocks`` decoder blocks (LoRA weights excluded, so
    that models with and without an adapter are measured over the same parameters)."""
    layers = decoder_layers(model)
    keep = {id(p) for block in list(layers)[-last_blocks:] for p in block.parameters() if p.dim() == 2}
    return [n for n, p in model.named_parameters() if id(p) in keep and "lora_" not in n]


def _sketch(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, dim, (n,), generator=g), torch.randint(0, 2, (n,), generator=g).float() * 2 - 1


def first_token_jacobians(model, tokenizer, prompts: list[str], names: list[str], topk: int = 10,
                          sketch_dim: int = 1 << 16, seed: int = 0, system_role: bool = True) -> list[torch.Tensor]:
    """For each prompt, the count-sketched Jacobian [topk, sketch_dim] of its topk first-token logits."""
    from torch.func import functional_call, jacrev
    was_training = model.training
    model.eval()
    named = dict(model.named_parameters())
    params = {n: named[n].detach() for n in names}
    total = sum(p.numel() for p in params.values())
    bucket, sign = _sketch(total, sketch_dim, seed)
    out = []
    for prompt in prompts:
        ids = torch.tensor([render_prompt_ids(tokenizer, [{"role": "user", "content": prompt}], system_role)])

        def logits(p):
            return functional_call(model, p, (ids,), {"use_cache": False}).logits[0, -1].float()
        with torch.no_grad():
            top = torch.topk(logits(params), topk).indices
        jac = jacrev(lambda p: logits(p)[top])(params)                     # name -> [topk, *shape]
        flat = torch.cat([jac[n].reshape(topk, -1).float() for n in names], dim=1)
        out.append(torch.zeros(topk, sketch_dim).index_add_(1, bucket, flat * sign))
        del jac, flat
    model.train(was_training)
    return out


def _ratio(ja: torch.Tensor, jb: torch.Tensor) -> float:
    """||K(a, b)||_F / ||K(a, a)||_F with K(a, b) = J(a) J(b)^T."""
    ja, jb = ja.detach(), jb.detach()
    return float(torch.linalg.norm(ja @ jb.T) / torch.linalg.norm(ja @ ja.T))


def ntk_similarity(model, tokenizer, seemingly: list[str], toxic: list[str], last_blocks: int = 2, topk: int = 10,
                   sketch_dim: int = 1 << 16, seed: int = 0, system_role: bool = True) -> dict:
    """Mean normalised eNTK similarity across the groups (x' seemingly toxic, x toxic) and within the seemingly-toxic
    group (x' != x''), with the per-pair values."""
    names = ntk_params(model, last_blocks)
    js = first_token_jacobians(model, tokenizer, seemingly, names, topk, sketch_dim, seed, system_role)
    jt = first_token_jacobians(model, tokenizer, toxic, names, topk, sketch_dim, seed, system_role)
    cross = [_ratio(a, b) for a in js for b in jt]
    within = [_ratio(a, b) for i, a in enumerate(js) for j, b in enumerate(js) if i != j]
    return {"cross": sum(cross) / len(cross), "within_seemingly": sum(within) / len(within) if within else float("nan"),
            "cross_pairs": cross, "within_pairs": within,
            "n_params": sum(dict(model.named_parameters())[n].numel() for n in names), "param_names": names}
