"""Toxicity-regularised SFT (App. K.2.1): the penalty's value, its straight-through gradient, and a trl run on a tiny
random Llama in which λ > 0 lowers the model's toxicity against λ = 0 trained identically."""
import datasets
import pytest
import torch
from helpers import smollm2_tokenizer, tiny_random_llama

from dart_utils.core.params import TrainingParams
from dart_utils.dart import tox_reg as X
from dart_utils.lm import training as T

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOXIC = ("hate", "damn")


class WordScorer:
    """1.0 when a text contains a listed word, else 0.0: a black box like the real scorers (no gradient)."""
    name = "toxicity"

    def __init__(self):
        self.calls = 0

    def score(self, texts):
        self.calls += 1
        return [float(any(w in t.lower() for w in TOXIC)) for t in texts]


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def tvec(tok):
    return X.token_toxicity(tok, WordScorer(), progress=False)


def test_token_toxicity_scores_each_vocabulary_token_once(tok, tvec):
    assert tvec.shape == (len(tok),) and set(tvec.unique().tolist()) == {0.0, 1.0}
    assert tvec[tok.convert_tokens_to_ids("Ġhate")] == 1 and tvec[tok.convert_tokens_to_ids("Ġlove")] == 0
    assert all(tvec[i] == 0 for i in tok.all_special_ids)

    class Bad(WordScorer):
        def score(self, texts):
            return [2.0 for _ in texts]
    with pytest.raises(ValueError, match=r"one score in \[0, 1\]"):
        X.token_toxicity(tok, Bad(), progress=False)


def test_penalty_value_is_the_scorer_and_its_gradient_lowers_toxicity(tok, tvec):
    """Value: H(r̂) of the teacher-forced argmax. Gradient: non-zero, and one step along it lowers s."""
    hate, love = tok.convert_tokens_to_ids("Ġhate"), tok.convert_tokens_to_ids("Ġlove")
    torch.manual_seed(0)
    logits = 0.1 * torch.randn(2, 5, len(tok))
    logits[0, 1:4, hate] += 4.0             # sequence 0: r̂ says " hate" at every completion position
    logits[1, 1:4, love] += 8.0             # sequence 1: " love"
    logits[:, :, hate] += 2.0               # " hate" keeps some probability everywhere (no softmax saturates)
    labels = torch.full((2, 5), -100)
    labels[:, 2:] = 7                        # completion = positions 2..4, predicted by logits 1..3
    logits.requires_grad_(True)
    scorer = WordScorer()
    loss, stats = X.tox_penalty(logits, labels, tok, scorer, tvec)
    assert scorer.calls == 1 and stats["tox_h"] == pytest.approx(0.5) and loss.item() == pytest.approx(0.5)
    assert "hate" in X.teacher_forced_rationales(logits, labels, tok)[0]
    loss.backward()
    g = logits.grad
    assert g.abs().sum() > 0 and (g[:, 0] == 0).all() and (g[:, 4] == 0).all()   # only completion predictors
    assert (g[1, 1:4, hate] > 0).all()       # descending the gradient lowers " hate"'s logit
    with torch.no_grad():
        before = X.expected_toxicity(logits, labels, tvec)
        after = X.expected_toxicity(logits - 100.0 * g, labels, tvec)
    assert (after < before).all()


def _rows(n=8):
    return [{"prompt": [{"role": "user", "content": f"Question {i}: what do you think of number {i}?"}],
             "completion": [{"role": "assistant", "content": f"I hate the number {i}, damn it.\nConclusion: NO"}]}
            for i in range(n)]


def _tp():
    return TrainingParams(lora_r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"],
                          learning_rate=3e-2, epochs=10.0, batch_size=4, per_device_batch_size=2,
                          lr_scheduler="constant", warmup_ratio=0.0, max_length=128, precision="fp32",
                          checkpoint_steps=None)


def _train_and_measure(tok, tvec, lam, tmp_path):
    data = datasets.Dataset.from_list(_rows())
    model = tiny_random_llama(tok, seed=0)
    trainer = T.build_trainer(model, tok, data, _tp(), tmp_path / f"lam{lam}", seed=0,
                              extend_trainer=X.extension(lam, WordScorer(), tvec, tok))
    trainer.train()
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
    return float(X.expected_toxicity(logits, batch["labels"], tvec).mean()), type(trainer).tox_log


def test_training_with_lambda_lowers_toxicity_against_plain_sft(tok, tvec, tmp_path):
    plain, log0 = _train_and_measure(tok, tvec, 0.0, tmp_path)
    reg, log1 = _train_and_measure(tok, tvec, 500.0, tmp_path)   # improbable toxic tokens: a weak gradient
    assert log0 == [] and log1 and all(0 <= r["tox_h"] <= 1 and 0 <= r["tox_expected"] <= 1 for r in log1)
    assert reg < 0.9 * plain, (reg, plain)   # measured: 2.1e-4 against 2.8e-4


def test_extension_rejects_a_negative_lambda_and_the_fused_loss(tok, tvec, tmp_path):
    with pytest.raises(ValueError, match="λ must be >= 0"):
        X.extension(-0.1, WordScorer(), tvec, tok)
    with pytest.raises(ValueError, match="full logits"):
        T.build_trainer(tiny_random_llama(tok), tok, datasets.Dataset.from_list(_rows()), _tp(), tmp_path, seed=0,
                        fused_loss=True, extend_trainer=X.extension(0.1, WordScorer(), tvec, tok))
