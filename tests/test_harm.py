"""Harm scorers: exact positive-label choice (the authors' substring bug), truncation, the CPU substitute, offline."""
import pytest
import torch

from dart_utils.core.params import HarmParams
from dart_utils.dart import harm
from dart_utils.lm.offline_models import ModelNotAvailable

SENTENCES = ["the cat sat on the mat", "you are a hateful stupid idiot", "have a nice day my friend",
             "I will hurt you", "this answer is a careful analysis of the question"]
N_POS = 34          # RoBERTa position table: 34 - (pad_token_id 1 + 1) = 32 usable tokens


def _tokenizer():
    """A tiny word-level tokenizer trained here (no hub): one token per word, <s> ... </s> around each text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    t = Tokenizer(models.WordLevel(unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    t.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", cls_token="<s>", sep_token="</s>")


def _tiny_model(path, id2label, seed):
    """A randomly initialised 2-layer RoBERTa classifier saved like a hub model (no model_max_length set, so the
    scorer must take its limit from the position table)."""
    from transformers import RobertaConfig, RobertaForSequenceClassification
    tok = _tokenizer()
    torch.manual_seed(seed)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=N_POS, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    model = RobertaForSequenceClassification(cfg).eval()
    tok.save_pretrained(path)
    model.save_pretrained(path)
    return model, tok


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, one_torch_thread):
    out = {}
    cases = [("hate_at_1", {0: "nothate", 1: "hate"}, 0), ("hate_at_0", {0: "hate", 1: "nothate"}, 1)]
    for key, id2label, seed in cases:
        d = tmp_path_factory.mktemp(key)
        model, tok = _tiny_model(d, id2label, seed)
        out[key] = (d, model, tok)
    return out


def _manual_softmax(model, tok, texts):
    with torch.no_grad():
        enc = tok(texts, padding=True, return_tensors="pt")
        return model(**enc).logits.softmax(-1)


@pytest.mark.parametrize("key,expected_index", [("hate_at_1", 1), ("hate_at_0", 0)])
def test_positive_label_exact_match(tiny_models, key, expected_index):
    d, model, tok = tiny_models[key]
    scorer = harm.HFClassifierScorer(str(d), positive_label="HATE", batch_size=2, progress=False)
    assert scorer.index == expected_index
    assert scorer.describe()["positive_label"] == "hate"
    expected = _manual_softmax(model, tok, SENTENCES)[:, expected_index].tolist()
    assert scorer.score(SENTENCES) == pytest.approx(expected, abs=1e-5)
    assert all(0.0 <= s <= 1.0 for s in scorer.score(SENTENCES))


def test_substring_rule_of_the_authors_picks_nothate():
    """Reference §5.2: `first label containing "hate"` selects `nothate` in facebook/...-r4-target's {0: nothate,
    1: hate}, so the authors' "hate score" was P(not hate). The exact rule selects index 1."""
    id2label = {0: "nothate", 1: "hate"}
    substring_index = next(i for i, lab in id2label.items() if "hate" in lab.lower())
    assert id2label[substring_index] == "nothate"
    assert harm.positive_index(id2label, "hate") == 1
    assert harm.positive_index({0: "neutral", 1: "toxic"}, "toxic") == 1     # s-nlp labels: both rules agree


def test_missing_label_lists_labels(tiny_models):
    d, _, _ = tiny_models["hate_at_1"]
    with pytest.raises(ValueError, match=r"'toxic' not found.*0: 'nothate', 1: 'hate'"):
        harm.HFClassifierScorer(str(d), positive_label="toxic", progress=False)


def test_long_text_truncated_to_model_limit(tiny_models):
    d, _, _ = tiny_models["hate_at_1"]
    scorer = harm.HFClassifierScorer(str(d), positive_label="hate", progress=False)
    assert scorer.max_length == N_POS - 2
    words = " ".join(SENTENCES).split()
    long_text = " ".join(words[i % len(words)] for i in range(5000))
    truncated = " ".join(long_text.split()[:N_POS - 4])           # limit minus <s> and </s>
    long_score, short_score, other = scorer.score([long_text, truncated, SENTENCES[0]])
    assert long_score == pytest.approx(short_score, abs=1e-6)
    assert other == pytest.approx(scorer.score([SENTENCES[0]])[0], abs=1e-6)    # padding in a batch changes nothing


def test_empty_texts_score_zero_without_model(tiny_models):
    d, _, _ = tiny_models["hate_at_1"]
    scorer = harm.HFClassifierScorer(str(d), positive_label="hate", progress=False)
    assert scorer.score(["", "   ", SENTENCES[1]])[:2] == [0.0, 0.0]
    assert scorer.score([]) == []
    assert harm.ProfanityCheckScorer().score(["", "\n"]) == [0.0, 0.0]


def test_profanity_check_scorer():
    scorer = harm.ProfanityCheckScorer()
    offensive, neutral = scorer.score(["you are a fucking stupid idiot, shut the fuck up",
                                       "The committee reviewed the budget and approved the new library."])
    assert 0.0 <= neutral < offensive <= 1.0
    d = scorer.describe()
    assert "bag-of-words" in d["substitution"] and "NOT comparable" in d["substitution"]


def test_make_scorers_cpu_toxicity_and_optional_hate():
    hp = HarmParams(scorer="alt_profanity_check", toxicity_model="x", hate_model="y", tau_delta=0.01)
    scorers = harm.make_scorers(hp)
    assert list(scorers) == ["toxicity"] and isinstance(scorers["toxicity"], harm.ProfanityCheckScorer)
    scorers = harm.make_scorers(hp.model_copy(update={"hate_scorer": "hatesonar"}))
    assert list(scorers) == ["toxicity", "hate"] and isinstance(scorers["hate"], harm.HateSonarScorer)


def test_hatesonar_scores_hate_above_neutral_and_empty_zero():
    scorer = harm.HateSonarScorer(batch_size=2)          # 2: the batching path runs over several batches
    hateful, neutral, empty, swear = scorer.score([
        "I hate those people, they are vermin and should all be gassed",
        "The committee reviewed the budget and approved the new library.", "  ",
        "this fucking printer is broken again"])
    assert empty == 0.0 and 0.0 <= neutral < hateful <= 1.0 and swear < hateful
    d = scorer.describe()
    assert d["name"] == "hate" and d["positive_label"] == "hate_speech" and "NOT comparable" in d["substitution"]


def test_ensure_locale_builds_it_without_root_or_says_what_to_do(tmp_path):
    """In fresh processes (a loaded locale stays cached in this one): without localedef a clear error; with it the
    locale is compiled into the cache directory and LOCPATH points there."""
    import os
    import subprocess
    import sys
    code = ("import sys; from pathlib import Path; from dart_utils.dart import harm\n"
            "try:\n    print(harm.ensure_locale(cache=Path(sys.argv[1])))\n"
            "except RuntimeError as e:\n    print('ERROR', e)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LOCPATH", "LC_ALL", "LANG")}
    probe = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], capture_output=True, text=True,
                           env=env | {"PATH": str(tmp_path / "nothing")}, check=True).stdout
    if probe.strip() == "None":
        pytest.skip("this system has en_US.UTF-8: nothing to build")
    assert probe.startswith("ERROR") and "locales" in probe and "hate_scorer: none" in probe
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.strip() == str(tmp_path / "b") and (tmp_path / "b" / harm.LOCALE / "LC_CTYPE").is_file()


def test_rationale_only_strips_conclusion():
    raw = "Analysis: the prompt asks for a definition; nothing harmful.\nConclusion: YES"
    assert harm.rationale_only(raw) == "the prompt asks for a definition; nothing harmful."
    assert harm.rationale_only("") == ""
    assert harm.rationale_only("Conclusion: YES") == ""
    scorer = harm.ProfanityCheckScorer()
    assert harm.score_rationales(scorer, ["Conclusion: NO", raw]) == [0.0, scorer.score([harm.rationale_only(raw)])[0]]


def test_unavailable_model_is_model_not_available(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable, match=r"hf download no-such-org/no-such-harm-model.*harm\.hate_model: DIR"):
        harm.HFClassifierScorer("no-such-org/no-such-harm-model", "hate", setting="harm.hate_model", progress=False)
    with pytest.raises(ModelNotAvailable, match="harm.toxicity_model"):
        harm.HFClassifierScorer("/no/such/dir/model", "toxic", progress=False)
