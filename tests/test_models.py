"""Student loading: GGUF converted once and reused, clear errors for unavailable hub models, precision resolution."""
import pytest
import torch
from helpers import SMOLLM2, smollm2_tokenizer, tiny_random_llama

from dart_utils.core.params import StudentParams
from dart_utils.lm import student as M
from dart_utils.lm.offline_models import ModelNotAvailable

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _student(source, model_id, dtype="auto"):
    return StudentParams(name="t", source=source, model_id=model_id, system_role=True, dtype=dtype)


# ------------------------------------------------------------------------------------------------ precision
def test_resolve_precision_explicit_and_auto(monkeypatch):
    assert M.resolve_precision("bf16") == "bf16"
    assert M.resolve_precision("fp32") == "fp32"
    assert M.resolve_precision("auto") == ("bf16" if M.bf16_supported() else "fp32")
    with pytest.raises(ValueError):
        M.resolve_precision("fp16")
    assert M.torch_dtype("fp32") is torch.float32 and M.torch_dtype("bf16") is torch.bfloat16


def test_resolve_precision_follows_cpu_capabilities(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True})
    assert not M.bf16_supported() and M.resolve_precision("auto") == "fp32"
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    assert M.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True})
    assert M.resolve_precision("auto") == "bf16"


# ------------------------------------------------------------------------------------------------ hf source
def test_hf_source_unavailable_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(ModelNotAvailable) as e:
        M.load_student(_student("hf", "dart-nonexistent-org/no-such-model-xyz"), cache_dir=None)
    msg = str(e.value)
    assert "dart-nonexistent-org/no-such-model-xyz" in msg
    assert "student.model_id" in msg and "HF_HUB_OFFLINE" in msg and "hub" in msg


def test_hf_source_missing_local_dir(tmp_path):
    with pytest.raises(ModelNotAvailable, match="does not exist"):
        M.load_student(_student("hf", str(tmp_path / "no" / "such" / "dir")), cache_dir=tmp_path)


def test_gguf_unknown_name(tmp_path):
    with pytest.raises(ModelNotAvailable, match="unknown GGUF model"):
        M.load_student(_student("gguf", "no-such-gguf"), cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------------ tiny model
def test_tiny_random_llama_matches_tokenizer():
    tok = smollm2_tokenizer()
    assert tok.padding_side == "left" and tok.pad_token is not None
    a, b = tiny_random_llama(tok, seed=3), tiny_random_llama(tok, seed=3)
    assert a.config.vocab_size == len(tok) and a.config.num_hidden_layers == 2
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert sum(p.numel() for p in a.parameters()) < 5_000_000


# ------------------------------------------------------------------------------------------------ GGUF (real SmolLM2)
@pytest.fixture(scope="module")
def converted():
    """The shared conversion cache (runs/cache/models, the pipeline's): a fresh clone converts here, once for the whole
    suite (the end-to-end tests and test_serving reuse it), instead of a second ~18 s conversion into a temporary
    directory. Warm, the tests below check the finished conversion and that a load reuses it."""
    cache = M.CACHE_DIR
    model, tok = M.load_student(_student("gguf", SMOLLM2), cache)
    return cache, model, tok


def test_gguf_converts_to_transformers_dir(converted):
    cache, model, tok = converted
    out = cache / SMOLLM2
    assert (out / M.CONVERSION_MARKER).is_file() and (out / "config.json").is_file()
    assert list(out.glob("*.safetensors")) and (out / "tokenizer_config.json").is_file()
    assert not [p for p in cache.iterdir() if ".tmp-" in p.name]
    assert model.config.model_type == "llama" and model.config.vocab_size == 49152
    assert getattr(model.config, "quantization_config", None) is None
    assert getattr(model, "hf_quantizer", None) is None
    assert model.dtype == M.torch_dtype("auto") and not model.training
    info = M.describe(model)
    assert info["model_type"] == "llama" and 130e6 < info["parameters"] < 140e6
    assert tok.padding_side == "left" and tok.pad_token_id is not None and tok.chat_template


def test_gguf_model_is_sane(converted):
    """The dequantized weights are the real model: it answers a trivial question."""
    from dart_utils.core.params import GenerationParams
    from dart_utils.lm.generation import generate
    _, model, tok = converted
    gp = GenerationParams(max_new_tokens=12, do_sample=False, temperature=0.2, top_p=0.9, batch_size=1)
    res = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]], gp, seed=0,
                   progress=False)
    assert "paris" in res.texts[0].lower(), res.texts


def test_gguf_second_load_reuses_conversion(converted, monkeypatch):
    cache, _, _ = converted
    out = cache / SMOLLM2
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    from transformers import AutoModelForCausalLM, AutoTokenizer
    calls = []
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def spy(real):
        def f(*a, **kw):
            calls.append(kw.get("gguf_file"))
            return real(*a, **kw)
        return f
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy(real_model))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy(real_tok))
    model, tok = M.load_student(_student("gguf", SMOLLM2, dtype="fp32"), cache)
    assert calls and all(c is None for c in calls), "the GGUF was read again"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    assert model.dtype == torch.float32


def test_hf_source_local_directory(converted):
    """source 'hf' with a local directory (here the converted SmolLM2) loads without the hub."""
    cache, _, _ = converted
    model, tok = M.load_student(_student("hf", str(cache / SMOLLM2), dtype="bf16"), cache)
    assert model.dtype == torch.bfloat16 and tok.padding_side == "left"

