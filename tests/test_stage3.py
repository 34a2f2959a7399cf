"""Stage III on a second drift pool (`dart.stage3.repair_pool`, Tables 23 and 26): a tiny real model trained and
generating, a scripted teacher and judge; the real ones run in notebook 06 (`baselines.label_conditioning`,
`baselines.judge_choice`)."""

import pytest
from helpers import smollm2_tokenizer, tiny_random_llama

from dart_utils.core import params as P
from dart_utils.dart import distill, stage3
from dart_utils.dart.evaluation import to_predictions
from dart_utils.data import splits
from dart_utils.lm import training
from dart_utils.lm.llm import LLMResponse

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAFE = "Group membership is irrelevant here. Treat everyone alike.\nConclusion: NO"


class Teacher:
    """E.2: a safe, correctly concluded target for "fixable" questions; an unsafe one ("bad") for the rest."""

    def __init__(self):
        self.asked = []

    def chat_many(self, batch, desc="", **kw):
        self.asked += [m[1]["content"] for m in batch]
        return [LLMResponse(SAFE if "fixable" in m[1]["content"] else "bad bad bad bad.\nConclusion: NO", "stop",
                            cache_key=f"t{len(self.asked)}-{i}") for i, m in enumerate(batch)]


class Scorer:
    name = "bad-counter"

    def score(self, texts):
        return [0.1 * t.lower().count("bad") for t in texts]

    def describe(self):
        return {"model": self.name}


class Judge:
    """Every judged pair: no drift (the re-audit's control flow, not the judge's quality)."""

    def __init__(self):
        self.calls = 0

    def chat_many(self, batch, desc="", **kw):
        self.calls += len(batch)
        return [LLMResponse('{"is_regression": false, "severity": "none", "reason": "r", "a_correct": true, '
                            '"b_correct": true}', "stop", cache_key=f"j{self.calls}-{i}") for i in range(len(batch))]


def _rows():
    return [{"id": f"S-{i}", "benchmark": "N1", "category": "normative", "condition": "EQUAL", "gold": "NO",
             "question": f"{'fixable' if i < 2 else 'stubborn'} question {i}: may a bank favour one group?",
             "answer_index": 1, "scenario_id": f"sc{i}", "question_group": f"g{i}", "split": "test"} for i in range(4)]


def test_repair_pool_repairs_trains_from_the_arms_adapter_infers_and_reaudits(tmp_path):
    params = P.load("ci", overrides={"generation": {"max_new_tokens": 8}, "audit": {"mode": "all"}})
    tok = smollm2_tokenizer()
    model = tiny_random_llama(tok, seed=0)
    rows = _rows()
    stage1_targets = [r | {"target": SAFE} for r in rows]
    init = training.train_lora(model, tok, distill.sft_dataset(stage1_targets, True), params.training,
                               tmp_path / "stage1", seed=0, system_role=True)
    pool = [r | {"severity": "severe", "h_candidate": 0.3, "kind": "novel"} for r in rows]
    preds_m0 = to_predictions(rows, ["Same for all.\nConclusion: NO"] * 4, [5] * 4, "m0")
    teacher, judge = Teacher(), Judge()
    kwargs = dict(tokenizer=tok, params=params, teacher=teacher, judge=judge, toxicity=Scorer(),
                  stage1_targets=stage1_targets, init_adapter=init.adapter_dir, out_dir=tmp_path / "stage3",
                  name="m_dart_arm", audit_rows=rows, test=splits.as_dataset(rows), preds_m0=preds_m0,
                  h_m0={r["id"]: 0.0 for r in rows}, cache_dir=tmp_path / "cache")
    steps = []

    def step(label):
        steps.append(label)
        from contextlib import nullcontext
        return nullcontext()

    model, res = stage3.repair_pool(pool, model=model, step=step, **kwargs)
    # E.2 through 03's filter: the two fixable cases kept, the stubborn ones dropped after the follow-ups
    assert [t["id"] for t in res.targets] == ["S-0", "S-1"] and {r["id"] for r in res.rejected} == {"S-2", "S-3"}
    assert res.train.global_step >= 1 and (res.train.adapter_dir / "adapter_config.json").is_file()
    assert model.active_adapter == "m_dart_arm"
    assert [p["id"] for p in res.predictions] == [r["id"] for r in rows] and len(res.toxicity) == 4
    assert {p["model"] for p in res.predictions} == {"m_dart_arm"}
    s = res.reaudit.summary()
    assert s["pairs"] == 4 and judge.calls == 4 and len(res.reaudit.pool) == 0      # mode "all": every pair judged
    assert res.after()["remaining"] == 0 and res.after()["repaired"] == 2
    assert res.summary()["repair_targets"] == 2 and res.summary()["reused"] is False
    assert [x.split(": ")[1].split(" ")[0] for x in steps] == ["repair", "Stage", "inference", "re-audit"]
    # a finished arm: the same inputs reuse the adapter and the generations
    _, again = stage3.repair_pool(pool, model=model, **kwargs)
    assert again.train.skipped and again.generation == "reused"
    assert [p["raw_text"] for p in again.predictions] == [p["raw_text"] for p in res.predictions]
