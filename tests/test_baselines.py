"""The baselines of notebook 06 (dart.baselines) and their tables in notebook 07 (analysis.baselines): the label-only
data, Stage I's item selection, the trainer extension's fingerprint in train_lora, and Tables 19, 21 and 24 on
hand-made prediction frames whose right answers are known."""
from types import SimpleNamespace

import datasets
import pandas as pd
import pytest
import torch
from helpers import smollm2_tokenizer, tiny_random_llama
from scipy import stats
from test_main_results import frame

from dart_utils.analysis import baselines as BL
from dart_utils.core.artifacts import write_jsonl
from dart_utils.core.params import TrainingParams, load
from dart_utils.dart import baselines, distill
from dart_utils.dart import tox_reg as X
from dart_utils.lm import training as T

TARGETS = [{"id": f"t{i}", "question": f"Question {i}?", "gold": g, "target": f"Because {i}.\nConclusion: {g}"}
           for i, g in enumerate(["YES", "YES", "YES", "NO", "no"])]


# ---- data ---------------------------------------------------------------------------------------------------------
def test_label_only_targets_keep_the_items_and_drop_the_rationale():
    out = baselines.label_only_targets(TARGETS, "Conclusion: {label}")
    assert [t["id"] for t in out] == [t["id"] for t in TARGETS]
    assert [t["target"] for t in out] == ["Conclusion: YES"] * 3 + ["Conclusion: NO"] * 2
    assert TARGETS[0]["target"].startswith("Because")                     # the input is not modified
    ds = distill.sft_dataset(out, system_role=True)
    assert ds[3]["completion"] == [{"role": "assistant", "content": "Conclusion: NO"}]
    assert ds[3]["prompt"] == distill.sft_dataset(TARGETS, True)[3]["prompt"]   # the same prompt as Stage I
    with pytest.raises(ValueError, match="must contain"):
        baselines.label_only_targets(TARGETS, "Conclusion: YES")
    with pytest.raises(ValueError, match="'t9' has gold 'maybe'"):
        baselines.label_only_targets([{"id": "t9", "gold": "maybe"}], "Conclusion: {label}")


def test_stage1_items_are_notebook_01s_selection():
    assert baselines.stage1_items(TARGETS, False, 0) == TARGETS
    kept = baselines.stage1_items(TARGETS, True, 3)
    assert kept == distill.balance_labels(TARGETS, 3)[0]
    assert sorted(t["gold"].upper() for t in kept) == ["NO", "NO", "YES", "YES"]


def test_enabled_arms_follow_the_parameters():
    P = load("ci")
    assert baselines.enabled_arms(P.baselines) == ["label_only", "tox_reg"]
    assert baselines.enabled_arms(SimpleNamespace(label_only=False, tox_reg=True)) == ["tox_reg"]
    assert P.baselines.tox_reg_lambda == 0.1 and "{label}" in P.baselines.label_only_target


# ---- train_lora with a trainer extension ------------------------------------------------------------------------------
class WordScorer:
    name = "toxicity"

    def score(self, texts):
        return [float("hate" in t.lower()) for t in texts]

    def describe(self):
        return {"name": self.name, "scorer": "word"}


def _tp():
    return TrainingParams(lora_r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                          learning_rate=1e-2, epochs=1.0, batch_size=2, per_device_batch_size=2,
                          lr_scheduler="constant", warmup_ratio=0.0, max_length=96, precision="fp32",
                          checkpoint_steps=None)


@pytest.mark.usefixtures("one_torch_thread")
def test_train_lora_fingerprints_the_extension(tmp_path):
    tok = smollm2_tokenizer()
    t = X.token_toxicity(tok, WordScorer(), progress=False)
    ds = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": f"Question {i}?"}],
         "completion": [{"role": "assistant", "content": f"I hate {i}.\nConclusion: NO"}]} for i in range(4)])
    model = tiny_random_llama(tok, seed=0)
    with pytest.raises(ValueError, match="needs extend_key"):
        T.train_lora(model, tok, ds, _tp(), tmp_path, seed=0, extend_trainer=X.extension(0.1, WordScorer(), t, tok))
    key = {"arm": "tox_reg", "lambda": 0.1}
    first = T.train_lora(model, tok, ds, _tp(), tmp_path, seed=0, log=lambda s: None,
                         extend_trainer=X.extension(0.1, WordScorer(), t, tok), extend_key=key)
    assert not first.skipped and first.global_step == 2
    again = T.train_lora(model, tok, ds, _tp(), tmp_path, seed=0, log=lambda s: None,
                         extend_trainer=X.extension(0.1, WordScorer(), t, tok), extend_key=key)
    assert again.skipped                                          # same λ and scorer: reused
    other = T.train_lora(model, tok, ds, _tp(), tmp_path, seed=0, log=lambda s: None,
                         extend_trainer=X.extension(0.5, WordScorer(), t, tok), extend_key={**key, "lambda": 0.5})
    assert not other.skipped                                      # another λ: retrained
    plain = T.fingerprint(model, tok, ds, _tp(), 0)
    assert plain != T.fingerprint(model, tok, ds, _tp(), 0, extra={"extend": key})
    assert torch.isfinite(torch.tensor(other.train_loss))


# ---- Tables 19, 21, 24 --------------------------------------------------------------------------------------------
def _preds():
    """20 items; M0 right on 4, label-only on 10, M_int on 15, M_DART on 16 (nested: every right item stays right)."""
    n = 20
    bench = ["D1"] * 10 + ["N1"] * 10
    def f(k, tox, parsed=None):
        return frame([i < k for i in range(n)], parsed=parsed, benchmark=bench, toxicity=[tox] * n)
    return {"m0": f(4, 0.2, parsed=[True] * 18 + [False] * 2), "label_only": f(10, 0.0), "m_int": f(15, 0.3),
            "m_dart": f(16, 0.1)}


def test_table24_mcnemar_against_each_baseline_with_bonferroni_for_four():
    t, notes = BL.table24(_preds())
    t = t.set_index("comparison")
    r = t.loc["M_DART vs M0 (base)"]
    assert (r["n"], r["b"], r["c"], r["Δ acc (pp)"]) == (20, 0, 12, 60.0)
    assert r["p"] == pytest.approx(stats.binomtest(0, 12, 0.5).pvalue)
    assert r["p (Bonferroni)"] == pytest.approx(4 * r["p"]) and r["significant"] == "yes"
    r = t.loc["M_DART vs M_int (Stage I)"]
    assert (r["b"], r["c"], r["p"], r["significant"]) == (0, 1, 1.0, "no")
    assert t.loc["M_DART vs Toxicity-reg. SFT", "significant"] == BL.NOT_RUN     # arm off: not run, m stays 4
    assert any("m = 4" in x and "0.0125" in x for x in notes)


def test_table19_and_table21_rows_for_every_method():
    t, notes = BL.table19(_preds())
    t = t.set_index("method")
    assert list(t.index) == [BL.LABELS[m] for m in BL.METHODS]
    lo = t.loc["Label-only SFT"]
    assert (lo["Acc %"], lo["EQUAL %"], lo["DIFF %"], lo["Parse %"]) == (50.0, 50.0, 50.0, 100.0)
    assert lo["tox. vs M0 %"] == -100.0 and lo["paper EQUAL"] == "38.7 %"
    assert t.loc["M0 (base)", "Parse %"] == 90.0 and pd.isna(t.loc["M0 (base)", "tox. vs M0 %"])
    assert t.loc["Toxicity-reg. SFT", "Acc %"] == BL.NOT_RUN
    t21, _ = BL.table21(_preds())
    t21 = t21.set_index("method")
    assert t21.loc["Label-only SFT", "D1"] == 100.0 and t21.loc["Label-only SFT", "N1"] == 0.0
    assert t21.loc["M0 (base)", "D1"] == 40.0 and t21.loc["M0 (base)", "N1"] == 0.0   # parsed-only
    assert t21.loc["M_DART (DART)", "paper N1–N4"] == "97.0 %"


def test_load_baselines_joins_toxicity_and_rejects_unknown_models(tmp_path):
    p, s = tmp_path / "p.jsonl", tmp_path / "s.jsonl"
    rows = frame([True, False]).drop(columns="toxicity").assign(model="label_only").to_dict("records")
    write_jsonl(rows, p)
    write_jsonl([{"id": r["id"], "model": "label_only", "toxicity": 0.25} for r in rows], s)
    got = BL.load_baselines(p, s)
    assert list(got) == ["label_only"] and got["label_only"]["toxicity"].tolist() == [0.25, 0.25]
    write_jsonl([{**rows[0], "model": "m_other"}], p)
    with pytest.raises(ValueError, match="unknown baseline model"):
        BL.load_baselines(p, s)
    write_jsonl([], p), write_jsonl([], s)
    assert BL.load_baselines(p, s) == {}


# ---- Table 20: the λ sweep ----------------------------------------------------------------------------------------
def test_sweep_table_harmonic_mean_normalisation_and_selection():
    res = {0.5: {"acc": 0.4, "tox": 0.1, "n": 8}, 0.01: {"acc": 0.6, "tox": 0.4, "n": 8},
           0.1: {"acc": 0.6, "tox": 0.2, "n": 8}}
    t = baselines.sweep_table(res, "max")
    assert list(t["lambda"]) == [0.01, 0.1, 0.5]
    assert list(t["normalised toxicity"]) == pytest.approx([1.0, 0.5, 0.25])
    assert list(t["H-mean"]) == pytest.approx([0.0, 2 * 0.6 * 0.5 / 1.1, 2 * 0.4 * 0.75 / 1.15])
    assert baselines.selected_lambda(t) == 0.1 and t["selected"].sum() == 1
    raw = baselines.sweep_table(res, "none")                       # probabilities taken as they are
    assert list(raw["normalised toxicity"]) == pytest.approx([0.4, 0.2, 0.1])
    tie = baselines.sweep_table({0.2: {"acc": 0.5, "tox": 0.0}, 0.05: {"acc": 0.5, "tox": 0.0}})
    assert baselines.selected_lambda(tie) == 0.05                  # a tie goes to the smaller λ
    with pytest.raises(ValueError, match="unknown baselines.tox_reg_normalise"):
        baselines.sweep_table(res, "rank")
    with pytest.raises(ValueError, match="no λ results"):
        baselines.sweep_table({})


def test_reuse_adapter_copies_a_finished_run_once(tmp_path):
    src, dst = tmp_path / "sweep" / "lambda_0.1", tmp_path / "tox_reg"
    with pytest.raises(FileNotFoundError, match="no finished training run"):
        baselines.reuse_adapter(src, dst)
    (src / "adapter").mkdir(parents=True)
    (src / "adapter" / "adapter_model.safetensors").write_bytes(b"w")
    (src / "trainer").mkdir()
    (src / "train_fingerprint.txt").write_text("abc\n")
    baselines.reuse_adapter(src, dst)
    assert (dst / "adapter" / "adapter_model.safetensors").read_bytes() == b"w" and not (dst / "trainer").exists()
    (dst / "marker").write_text("kept")
    baselines.reuse_adapter(src, dst)                              # the same run: nothing copied again
    assert (dst / "marker").is_file()
    (src / "train_fingerprint.txt").write_text("other\n")
    baselines.reuse_adapter(src, dst)                              # another run: replaced
    assert not (dst / "marker").exists() and (dst / "train_fingerprint.txt").read_text() == "other\n"


def test_table20_beside_the_papers_selection():
    rows = baselines.sweep_table({0.1: {"acc": 0.5, "tox": 0.2, "n": 4}, 0.5: {"acc": 0.25, "tox": 0.1, "n": 4}})
    t, notes = BL.table20(rows.to_dict("records"))
    t = t.set_index("λ")
    assert t.loc[0.1, "paper"] == "selected" and t.loc[0.5, "paper Acc"] == "45.6 %"
    # λ = 0.1 is the sweep's most toxic (normalised 1, H-mean 0): λ = 0.5 is selected, against the paper's choice
    assert t.loc[0.5, "selected"] == "yes" and t.loc[0.1, "selected"] == ""
    assert t.loc[0.1, "Acc %"] == 50.0 and t.loc[0.1, "n (validation)"] == 4 and t.loc[0.5, "H-mean"] == pytest.approx(1 / 3)
    empty, notes = BL.table20([])
    assert empty.empty and "No λ sweep ran" in notes[0]
