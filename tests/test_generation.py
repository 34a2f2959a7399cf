"""Batched generation (left padding, input order, greedy == one at a time) and M0/M_int switching on one model."""
import pytest
import torch
from helpers import smollm2_tokenizer, tiny_random_llama
from peft import LoraConfig, get_peft_model

from dart_utils.core.params import GenerationParams
from dart_utils.lm import student as M
from dart_utils.lm.chat import merge_system, render_prompt_ids
from dart_utils.lm.generation import GenerationResult, generate, use_adapter

PROMPTS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "Tell me a long story about a dragon and a knight, with many details and names."}],
    [{"role": "user", "content": "What is two plus two, exactly, in words?"}],
    [{"role": "system", "content": "Answer YES or NO."}, {"role": "user", "content": "Is water wet?"}],
    [{"role": "user", "content": "Name three colours of the rainbow, please, and say which is your favourite."}],
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gp(batch_size=8, max_new_tokens=8, do_sample=False, engine="static"):
    return GenerationParams(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=0.2, top_p=0.9,
                            batch_size=batch_size, engine=engine)


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_random_llama(tok, seed=1)


def test_batched_equals_one_at_a_time_and_keeps_order(tok, model):
    lengths = [len(render_prompt_ids(tok, p)) for p in PROMPTS]
    assert len(set(lengths)) == len(lengths)                      # really different lengths -> left padding used
    batched = generate(model, tok, PROMPTS, _gp(batch_size=8), seed=0, progress=False)
    single = [generate(model, tok, [p], _gp(batch_size=1), seed=0, progress=False).texts[0] for p in PROMPTS]
    assert isinstance(batched, GenerationResult)
    assert batched.texts == single
    assert len(set(single)) > 1                                    # outputs differ between prompts
    assert batched.prompt_token_counts == lengths
    # uneven batches (2 + 2 + 1) and reversed input order: same outputs, in the caller's order
    rev = generate(model, tok, PROMPTS[::-1], _gp(batch_size=2), seed=0, progress=False)
    assert rev.texts == single[::-1]


def test_counts_throughput_and_settings(tok, model):
    res = generate(model, tok, PROMPTS, _gp(max_new_tokens=6), seed=0, progress=False)
    assert res.tokens_per_s > 0 and res.wall_time_s > 0
    assert all(1 <= n <= 6 for n in res.new_token_counts)
    assert all(f or n == 6 for f, n in zip(res.finished, res.new_token_counts))   # not finished = cut at the limit
    assert res.settings["do_sample"] is False and res.settings["max_new_tokens"] == 6
    assert generate(model, tok, [], _gp(), seed=0).texts == []


def test_sampling_is_seeded(tok, model):
    a = generate(model, tok, PROMPTS, _gp(do_sample=True), seed=7, progress=False)
    b = generate(model, tok, PROMPTS, _gp(do_sample=True), seed=7, progress=False)
    assert a.texts == b.texts and a.settings["temperature"] == 0.2 and a.settings["top_k"] == 0


def test_system_merge():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert merge_system(msgs) == [{"role": "user", "content": "S\n\nU"}]
    assert msgs[1]["content"] == "U"                               # input not mutated
    assert merge_system([{"role": "user", "content": "U"}]) == [{"role": "user", "content": "U"}]


def test_system_role_false_renders_merged_prompt(tok):
    msgs = PROMPTS[1]
    merged = tok.decode(render_prompt_ids(tok, msgs, system_role=False))
    assert "<|im_start|>user\nYou are terse.\n\nTell me" in merged
    assert "<|im_start|>system\nYou are terse." not in merged


def test_disable_adapter_equals_base_model(tok, tmp_path):
    base = tiny_random_llama(tok, seed=2)
    want = generate(base, tok, PROMPTS, _gp(), seed=0, progress=False).texts
    # two random non-zero adapters (LoRA's default init is a no-op, so it would prove nothing)
    for name, seed in (("M_int", 10), ("M_DART", 11)):
        torch.manual_seed(seed)
        cfg = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"],
                         init_lora_weights=False, task_type="CAUSAL_LM")
        tmp_model = get_peft_model(tiny_random_llama(tok, seed=2), cfg)
        tmp_model.save_pretrained(tmp_path / name)
    model = M.attach_adapter(base, tmp_path / "M_int", name="M_int")
    model = M.attach_adapter(model, tmp_path / "M_DART", name="M_DART")
    with use_adapter(model, None):
        m0 = generate(model, tok, PROMPTS, _gp(), seed=0, progress=False).texts
    with use_adapter(model, "M_int"):
        mint = generate(model, tok, PROMPTS, _gp(), seed=0, progress=False).texts
    with use_adapter(model, "M_DART"):
        mdart = generate(model, tok, PROMPTS, _gp(), seed=0, progress=False).texts
    assert m0 == want                                              # adapters off == the bare base model
    assert mint != want and mdart != want and mint != mdart
    assert model.active_adapter == "M_int"                         # restored after the context
    with use_adapter(model, None):                                 # and disabling again still gives the base
        assert generate(model, tok, PROMPTS, _gp(), seed=0, progress=False).texts == want
    with pytest.raises(ValueError, match="no adapter named"):
        with use_adapter(model, "nope"):
            pass
    with pytest.raises(ValueError, match="has no adapters"):
        with use_adapter(tiny_random_llama(tok), "M_int"):
            pass


def test_continuous_engine_matches_static_greedy_in_input_order(tok, model):
    """Continuous batching (2 slots for 5 prompts: slots are refilled) gives the static engine's greedy outputs, in
    the caller's order, with the same counts and stop flags."""
    static = generate(model, tok, PROMPTS, _gp(max_new_tokens=12), seed=0, progress=False)
    cont = generate(model, tok, PROMPTS, _gp(batch_size=2, max_new_tokens=12, engine="continuous"), seed=0,
                    progress=False)
    assert cont.texts == static.texts
    assert cont.new_token_counts == static.new_token_counts and cont.finished == static.finished
    assert cont.settings["engine"] == "continuous" and "engine" not in static.settings
    rev = generate(model, tok, PROMPTS[::-1], _gp(batch_size=2, max_new_tokens=12, engine="continuous"), seed=0,
                   progress=False)
    assert rev.texts == static.texts[::-1]


def test_continuous_engine_follows_the_active_adapter(tok, tmp_path):
    torch.manual_seed(10)
    cfg = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                     task_type="CAUSAL_LM")
    get_peft_model(tiny_random_llama(tok, seed=3), cfg).save_pretrained(tmp_path / "a")
    model = M.attach_adapter(tiny_random_llama(tok, seed=3), tmp_path / "a", name="M_int")
    gp_c = _gp(max_new_tokens=8, engine="continuous")
    for name in (None, "M_int"):
        with use_adapter(model, name):
            assert (generate(model, tok, PROMPTS, gp_c, seed=0, progress=False).texts
                    == generate(model, tok, PROMPTS, _gp(max_new_tokens=8), seed=0, progress=False).texts)
    with use_adapter(model, None):
        m0 = generate(model, tok, PROMPTS, gp_c, seed=0, progress=False).texts
    with use_adapter(model, "M_int"):
        assert generate(model, tok, PROMPTS, gp_c, seed=0, progress=False).texts != m0


def test_generation_key_static_unchanged_continuous_distinct(tok, model):
    """The static engine keeps the key it had before `engine` existed (old caches stay valid); continuous differs."""
    from dart_utils.core.hashing import content_key
    from dart_utils.lm.generation import GENERATION_CACHE_VERSION, eos_token_ids, generation_key
    from dart_utils.lm.student import identity
    import peft
    import transformers
    ids = [render_prompt_ids(tok, p) for p in PROMPTS]
    gp = _gp()
    old = content_key({"v": GENERATION_CACHE_VERSION, "model": identity(model), "adapter": None, "prompt_ids": ids,
                       "decoding": {k: v for k, v in gp.model_dump(mode="json").items()
                                        if k not in ("engine", "backend", "server")},   # fields added later
                       "seed": 0, "eos": eos_token_ids(model, tok),
                       "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                    "peft": peft.__version__}})
    assert generation_key(model, tok, ids, gp, 0, None) == old
    assert generation_key(model, tok, ids, _gp(engine="continuous"), 0, None) != old
