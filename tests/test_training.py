"""LoRA training with trl on a tiny random Llama (real SmolLM2 tokenizer): masking, learning, save/reload, reruns."""
import json

import datasets
import pytest
import torch
from helpers import smollm2_tokenizer, tiny_random_llama
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer

from dart_utils.core.params import TrainingParams
from dart_utils.lm import student as M
from dart_utils.lm import training as T
from dart_utils.lm.chat import render_prompt_ids

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SYSTEM = "Analyse the question, then end with 'Conclusion: YES' or 'Conclusion: NO'."


def _rows(n=8):
    return [{
        "prompt": [{"role": "system", "content": SYSTEM},
                   {"role": "user", "content": f"Question {i}: is the number {i} even?"}],
        "completion": [{"role": "assistant", "content": f"Analysis: {i} divided by 2 leaves {i % 2}.\n"
                                                        f"Conclusion: {'NO' if i % 2 else 'YES'}"}],
        "sample_id": f"s{i}",   # extra columns are allowed and ignored
    } for i in range(n)]


def _tp(**kw):
    base = dict(lora_r=8, lora_alpha=16, lora_dropout=0.05,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                learning_rate=1e-2, epochs=4.0, batch_size=4, per_device_batch_size=2, lr_scheduler="cosine",
                warmup_ratio=0.0, max_length=256, precision="fp32")
    base.update(kw)
    return TrainingParams(**base)


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def data():
    return datasets.Dataset.from_list(_rows())


@pytest.fixture(scope="module")
def stage1(tok, data, tmp_path_factory):
    """One Stage I run shared by several tests (training is the slow part)."""
    out = tmp_path_factory.mktemp("stage1")
    model = tiny_random_llama(tok, seed=0)
    logs = []
    res = T.train_lora(model, tok, data, _tp(), out, seed=0, log=logs.append, keep_adapter=True,
                       eval_dataset=data.select(range(2)))
    return model, res, out, logs


def _probe(tok):
    ids = render_prompt_ids(tok, _rows(1)[0]["prompt"])
    return torch.tensor([ids])


def test_prompt_tokens_are_masked(tok, data, tmp_path):
    model = tiny_random_llama(tok, seed=0)
    trainer = T.build_trainer(model, tok, data, _tp(), tmp_path, seed=0)
    example = trainer.train_dataset[0]
    batch = trainer.data_collator([example])
    input_ids, labels = batch["input_ids"][0], batch["labels"][0]
    prompt_ids = render_prompt_ids(tok, _rows(1)[0]["prompt"])
    n = len(prompt_ids)
    assert input_ids[:n].tolist() == prompt_ids                       # same ids as at inference (no extra BOS)
    assert (labels[:n] == -100).all()                                 # prompt: no loss
    assert (labels[n:] == input_ids[n:]).all() and len(labels) > n   # completion: every token trained
    trained = tok.decode(labels[n:].tolist())
    assert trained.startswith("Analysis: 0 divided by 2") and "<|im_end|>" in trained   # learns to stop
    # a padded batch pads labels with -100 too
    batch2 = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert ((batch2["attention_mask"] == 0) <= (batch2["labels"] == -100)).all()
    args = trainer.args
    assert args.gradient_accumulation_steps == 2 and args.per_device_train_batch_size == 2
    assert args.use_cpu == (not torch.cuda.is_available()) and not args.bf16
    assert args.report_to in ([], ["none"], "none") and args.lr_scheduler_type == "cosine"


def test_plain_loss_equals_trl_fused_loss(tok, data, tmp_path):
    """On the CPU train_lora uses the model's own cross-entropy instead of trl's chunked LM head: same number."""
    losses = []
    for fused in (True, False):
        trainer = T.build_trainer(tiny_random_llama(tok, seed=0), tok, data, _tp(), tmp_path / str(fused), seed=0,
                                  fused_loss=fused)
        trainer.model.eval()   # no dropout
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
        with torch.no_grad():
            losses.append(trainer.compute_loss(trainer.model, dict(batch)).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_training_lowers_loss_and_saves(stage1):
    model, res, out, logs = stage1
    losses = [h["loss"] for h in res.log_history if "loss" in h]
    assert res.global_step == 8 and len(losses) == 8          # 8 rows / 4 per step x 4 epochs, logged every step
    assert len([h for h in res.log_history if "eval_loss" in h]) == 4   # eval set scored after every epoch
    assert losses[-1] < losses[0]
    assert not res.skipped and res.wall_time_s > 0 and res.train_loss is not None
    assert (res.adapter_dir / "adapter_config.json").is_file() and (res.adapter_dir / "tokenizer_config.json").is_file()
    rec = json.loads((out / "train_log.json").read_text())
    assert rec["global_step"] == 8 and rec["log_history"] == res.log_history and rec["precision"] == "fp32"
    assert rec["training"]["lora_r"] == 8 and rec["n_dropped"] == 0 and rec["lora"]["r"] == 8
    assert (out / "train_fingerprint.txt").read_text().strip() == rec["fingerprint"]
    assert any("done in" in line for line in logs)
    cfg = json.loads((res.adapter_dir / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16 and cfg["bias"] == "none" and cfg["task_type"] == "CAUSAL_LM"
    assert set(cfg["target_modules"]) == set(_tp().target_modules)


def test_saved_adapter_reloads_to_identical_logits(tok, stage1):
    model, res, _, _ = stage1
    trained = res.model
    assert isinstance(trained, PeftModel)
    x = _probe(tok)
    with torch.no_grad():
        want = trained(input_ids=x).logits
        with trained.disable_adapter():
            base_now = trained(input_ids=x).logits
    fresh = tiny_random_llama(tok, seed=0)                  # same base weights, never trained
    with torch.no_grad():
        base = fresh(input_ids=x).logits
    reloaded = PeftModel.from_pretrained(fresh, str(res.adapter_dir)).eval()
    with torch.no_grad():
        got = reloaded(input_ids=x).logits
    assert torch.equal(got, want)
    assert torch.equal(base_now, base)                        # LoRA training left the base weights untouched
    assert not torch.allclose(want, base)                      # and the adapter does change the model


def test_second_call_skips_and_model_stays_clean(tok, data, stage1):
    model, res, out, _ = stage1
    model = res.model.unload()                                 # the caller's base model, adapters removed
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    mtime = (res.adapter_dir / "adapter_model.safetensors").stat().st_mtime_ns
    logs = []
    ev = data.select(range(2))
    again = T.train_lora(model, tok, data, _tp(), out, seed=0, log=logs.append, eval_dataset=ev)
    assert again.skipped and again.global_step == res.global_step and again.log_history == res.log_history
    assert (res.adapter_dir / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    assert any("skipped" in line for line in logs)
    # without keep_adapter the model is returned clean
    assert again.model is None and not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    # anything that changes the run changes the fingerprint
    fp = T.fingerprint(model, tok, data, _tp(), 0, ev)
    assert fp == (out / "train_fingerprint.txt").read_text().strip()
    assert T.fingerprint(model, tok, data, _tp(), 1, ev) != fp
    assert T.fingerprint(model, tok, data, _tp(learning_rate=1e-3), 0, ev) != fp
    assert T.fingerprint(model, tok, data.select(range(7)), _tp(), 0, ev) != fp
    assert T.fingerprint(model, tok, data, _tp(), 0) != fp                       # eval set too


def test_init_adapter_continues_with_fresh_schedule(tok, data, stage1, tmp_path):
    _, res, _, _ = stage1
    model = tiny_random_llama(tok, seed=0)
    before = {n: p.clone() for n, p in model.named_parameters()}
    tp = _tp(epochs=1.0)
    cont = T.train_lora(model, tok, data, tp, tmp_path / "stage3", seed=0, init_adapter=res.adapter_dir,
                        log=lambda s: None)
    assert cont.global_step == 2 and not cont.skipped
    first = [h for h in cont.log_history if "learning_rate" in h][0]
    assert first["learning_rate"] == pytest.approx(tp.learning_rate)   # new optimizer + schedule (no warmup here)
    assert cont.info["init_adapter"] == str(res.adapter_dir)
    from safetensors.torch import load_file
    a = load_file(res.adapter_dir / "adapter_model.safetensors")
    b = load_file(cont.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)   # continued from, then changed
    # the base model came back clean and unchanged
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    assert "forward" not in vars(model)                        # trl's fused-head patch removed
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not model.training


def test_refuses_model_with_adapters_and_bad_data(tok, data, stage1, tmp_path):
    _, res, _, _ = stage1
    pm = M.attach_adapter(tiny_random_llama(tok), res.adapter_dir)
    with pytest.raises(TypeError, match="bare base model"):
        T.train_lora(pm, tok, data, _tp(), tmp_path / "x", seed=0)
    bad = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "q"}],
                                       "completion": [{"role": "user", "content": "a"}]}])
    with pytest.raises(ValueError, match="assistant"):
        T.train_lora(tiny_random_llama(tok), tok, bad, _tp(), tmp_path / "y", seed=0)
    with pytest.raises(ValueError, match="multiple"):
        T.train_lora(tiny_random_llama(tok), tok, data, _tp(batch_size=5), tmp_path / "z", seed=0)
    with pytest.raises(ValueError, match="training set .* is empty"):     # e.g. no accepted teacher target
        T.train_lora(tiny_random_llama(tok), tok, data.select([]), _tp(), tmp_path / "e", seed=0)


_KILLED_RUN = '''
import os, signal, sys
sys.path.insert(0, {tests!r})
import datasets, torch
from transformers import TrainerCallback
torch.set_num_threads(1)
from helpers import smollm2_tokenizer, tiny_random_llama
from dart_utils.core.params import TrainingParams
from dart_utils.lm import training as T

class Kill(TrainerCallback):          # a hard crash right after the step-4 checkpoint is on disk
    def on_save(self, args, state, control, **kw):
        if state.global_step == 4:
            os.kill(os.getpid(), signal.SIGKILL)

tok = smollm2_tokenizer()
T.train_lora(tiny_random_llama(tok, seed=0), tok, datasets.Dataset.from_list({rows!r}),
             TrainingParams(**{tp!r}), {out!r}, seed=0, callbacks=[Kill()])
'''


def test_killed_run_resumes_to_the_uninterrupted_adapter(tok, data, tmp_path):
    """Resume after a hard kill (SIGKILL in a subprocess, mid-run): the rerun continues from the last checkpoint and
    ends with the adapter and losses of a run that was never interrupted."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    tp = _tp(checkpoint_steps=2)
    killed = tmp_path / "killed"
    script = _KILLED_RUN.format(tests=str(Path(__file__).parent), rows=_rows(), tp=tp.model_dump(), out=str(killed))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (killed / T.FINGERPRINT_FILE).exists() and (killed / "trainer" / "checkpoint-4").is_dir()
    assert not (killed / "trainer" / "checkpoint-2").exists()       # only the latest checkpoint is kept
    shutil.copytree(killed, tmp_path / "stale")

    logs = []
    resumed = T.train_lora(tiny_random_llama(tok, seed=0), tok, data, tp, killed, seed=0, log=logs.append)
    assert any("resuming the unfinished run from" in line and "checkpoint-4" in line for line in logs)
    assert resumed.global_step == 8 and resumed.info["resumed_from"] == "checkpoint-4"
    assert not list((killed / "trainer").glob("checkpoint-*"))        # checkpoints go once the adapter is saved

    whole = T.train_lora(tiny_random_llama(tok, seed=0), tok, data, tp, tmp_path / "whole", seed=0)
    assert whole.info["resumed_from"] is None
    a = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(whole.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    loss = lambda r: [h["loss"] for h in r.log_history if "loss" in h and h.get("step", 0) > 4]   # noqa: E731
    assert loss(resumed) == pytest.approx(loss(whole), abs=1e-6)
    # a checkpoint of another run (here: other data) is never resumed: it is deleted and the run starts at step 0
    logs.clear()
    other = T.train_lora(tiny_random_llama(tok, seed=0), tok, data.select(range(4)), tp, tmp_path / "stale", seed=0,
                         log=logs.append)
    assert other.info["resumed_from"] is None and not any("resuming" in line for line in logs)
    assert other.global_step == 4


def test_checkpoint_settings_do_not_change_the_fingerprint(tok):
    model = tiny_random_llama(tok, seed=0)
    ds = datasets.Dataset.from_list(_rows(2))
    assert T.fingerprint(model, tok, ds, _tp(), 0) == T.fingerprint(model, tok, ds, _tp(checkpoint_steps=3,
                                                                                          report_to="tensorboard"), 0)
    assert T.fingerprint(model, tok, ds, _tp(), 0) != T.fingerprint(model, tok, ds, _tp(learning_rate=1e-3), 0)


def test_accelerate_launcher_trains_the_inprocess_adapter(tok, data, tmp_path):
    """training.launcher: accelerate runs `accelerate launch --config_file params/accelerate/cpu.yaml` on the package's
    entry point; it writes the same files and the same adapter as the in-process run, and a rerun skips."""
    from safetensors.torch import load_file

    from dart_utils.core.params import PROJECT_ROOT

    cfg = str(PROJECT_ROOT / "params" / "accelerate" / "cpu.yaml")
    logs = []
    launched = T.train_lora(tiny_random_llama(tok, seed=0), tok, data, _tp(launcher="accelerate", accelerate_config=cfg),
                            tmp_path / "launched", seed=0, log=logs.append, keep_adapter=True)
    assert any("accelerate launch" in line for line in logs) and any(line.startswith("step 8/8") for line in logs)
    assert not launched.skipped and launched.global_step == 8 and isinstance(launched.model, PeftModel)
    local = T.train_lora(tiny_random_llama(tok, seed=0), tok, data, _tp(), tmp_path / "inprocess", seed=0)
    assert (tmp_path / "launched" / T.FINGERPRINT_FILE).read_text() == (tmp_path / "inprocess" / T.FINGERPRINT_FILE).read_text()
    a = load_file(str(launched.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(local.adapter_dir / "adapter_model.safetensors"))
    # equal up to float summation order (the child process runs torch's default thread count, the test one thread)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert not all(torch.allclose(a[k], torch.zeros_like(a[k])) for k in a if "lora_B" in k)   # it did train
    again = T.train_lora(tiny_random_llama(tok, seed=0), tok, data, _tp(launcher="accelerate", accelerate_config=cfg),
                         tmp_path / "launched", seed=0, log=logs.append)
    assert again.skipped                                              # same fingerprint whichever launcher trained it
    with pytest.raises(ValueError, match="callbacks"):
        T.train_lora(tiny_random_llama(tok, seed=0), tok, data.select(range(4)),
                     _tp(launcher="accelerate", accelerate_config=cfg), tmp_path / "cb", seed=0, callbacks=[object()])
    with pytest.raises(ValueError, match="accelerate_config"):
        _tp(launcher="accelerate")
