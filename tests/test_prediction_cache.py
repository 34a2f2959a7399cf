"""Cached generations are keyed by every input (items, prompts, chat templating, weights, adapter, decoding), and
predictions are parsed anew from them: a changed question, system prompt or parser never meets a stale result —
for M0 and for M_int alike."""
import pytest
import torch
from helpers import smollm2_tokenizer, tiny_random_llama
from peft import LoraConfig, get_peft_model

from dart_utils.core.params import GenerationParams
from dart_utils.dart import evaluation, prompts
from dart_utils.lm.student import attach_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS = [{"id": f"D1-diff-{i:04d}", "benchmark": "D1", "category": "descriptive", "condition": "DIFF", "gold": "YES",
         "question": q} for i, q in enumerate(["Is group A taller than group B?", "Do both groups vote?",
                                               "Which group is older on average?"])]


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def adapter_dir(tok, tmp_path_factory):
    """A saved LoRA adapter with non-zero weights (so M_int differs from M0)."""
    torch.manual_seed(0)
    pm = get_peft_model(tiny_random_llama(tok, seed=2), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                               init_lora_weights=False))
    path = tmp_path_factory.mktemp("adapter") / "adapter"
    pm.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def model(tok, adapter_dir):
    return attach_adapter(tiny_random_llama(tok, seed=2), adapter_dir, name="m_int")


def _gp(**kw):
    return GenerationParams(**({"max_new_tokens": 6, "do_sample": False, "temperature": 0.2, "top_p": 0.9,
                                "batch_size": 4} | kw))


def _predict(model, tok, which, adapter_dir, cache, rows=ROWS, gp=None, system_role=True):
    adapter = None if which == "m0" else "m_int"
    return evaluation.predictions(model, tok, rows, which, adapter, adapter_dir, gp or _gp(), 0, cache,
                                  system_role=system_role)


@pytest.mark.parametrize("which", ["m0", "m_int"])
def test_every_input_of_a_generation_is_in_its_key(model, tok, adapter_dir, tmp_path, monkeypatch, which):
    cache = tmp_path / "cache"
    first, stats = _predict(model, tok, which, adapter_dir, cache)
    assert isinstance(stats, dict) and stats["new_tokens"] > 0
    again, stats = _predict(model, tok, which, adapter_dir, cache)
    assert stats == "reused" and again == first

    edited = [dict(r) for r in ROWS]
    edited[1]["question"] = "Do both groups vote in every election?"        # same id, new text (re-staged data)
    assert _predict(model, tok, which, adapter_dir, cache, rows=edited)[1] != "reused"
    assert _predict(model, tok, which, adapter_dir, cache, system_role=False)[1] != "reused"   # chat templating
    assert _predict(model, tok, which, adapter_dir, cache, gp=_gp(max_new_tokens=5))[1] != "reused"
    monkeypatch.setattr(prompts, "INFERENCE_SYSTEM", prompts.INFERENCE_SYSTEM + " Be brief.")   # the system prompt
    assert _predict(model, tok, which, adapter_dir, cache)[1] != "reused"


def test_a_changed_adapter_is_a_new_m_int(model, tok, adapter_dir, tmp_path):
    cache = tmp_path / "cache"
    _predict(model, tok, "m_int", adapter_dir, cache)
    config = adapter_dir / "adapter_config.json"
    original = config.read_text()
    try:
        config.write_text(original.replace('"lora_dropout": 0.0', '"lora_dropout": 0.01'))   # other adapter files
        assert _predict(model, tok, "m_int", adapter_dir, cache)[1] != "reused"
    finally:
        config.write_text(original)


@pytest.mark.parametrize("which", ["m0", "m_int"])
def test_a_parser_change_reparses_without_generating(model, tok, adapter_dir, tmp_path, monkeypatch, which):
    from dart_utils.dart.parsing import ParsedOutput
    cache = tmp_path / "cache"
    before, _ = _predict(model, tok, which, adapter_dir, cache)
    assert all(r["parser_version"] for r in before)
    monkeypatch.setattr(evaluation, "parse_output", lambda text: ParsedOutput("YES", "r", True, None))
    after, stats = _predict(model, tok, which, adapter_dir, cache)
    assert stats == "reused"                                            # the raw outputs are reused ...
    assert [r["raw_text"] for r in after] == [r["raw_text"] for r in before]
    assert all(r["prediction"] == "YES" and r["parsed"] for r in after)   # ... and parsed by the parser of now
    assert any(r["prediction"] != "YES" for r in before)
