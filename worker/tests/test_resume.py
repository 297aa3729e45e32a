"""Checkpoints and resume, throttled progress, GPU readings, the base-model template and memory planning
(CPU, demo model)."""

from __future__ import annotations

import hashlib
import types

import pytest
from conftest import run_handler
from test_handler import check_events, failed

CKPT = "/ckpt/a0/checkpoint.pt"


def _metrics(events: list[dict]) -> dict[int, dict]:
    return {e["step"]: e for e in events if e["type"] == "metrics"}


def _with_checkpoints(job: dict, every_s: float = 0.0, resume: dict | None = None, path: str = CKPT) -> dict:
    base = job["input"]["dataset_url"].split("/ds.jsonl")[0]
    job["input"]["checkpoint"] = {"every_s": every_s, "upload_url": f"{base}{path}?sig=x", "resume": resume}
    return job


def _crash_after_checkpoint(job: dict, step: int) -> list[dict]:
    """Runs the pipeline until the checkpoint at `step` is uploaded, then stops it the way a lost worker
    stops: nothing after that point is delivered."""
    from lora_worker import pipeline
    from lora_worker.control import Control

    control = Control()
    events = []
    for event in pipeline.run(job, control):
        events.append(event)
        if event["type"] == "checkpoint" and event["step"] == step:
            control.cancel()
    assert not any(e["type"] == "result" for e in events), "stopped before the end"
    return events


# Dropout on, so the resumed run must also restore the random state to match.
HP = {"dropout": 0.1, "epochs": 3}


def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(store, make_job, event_validator):
    full = run_handler(_with_checkpoints(make_job(max_steps=None, hyperparameters=HP)))
    check_events(full, event_validator)
    assert full[-1]["status"] == "succeeded"
    saved = [e["step"] for e in full if e["type"] == "checkpoint"]
    total = full[-1]["metrics"]["total_steps"]
    assert saved == list(range(1, total)), "every_s=0 checkpoints after every step but the last"
    adapter = store.uploads["/out/adapter_model.safetensors"]

    crashed = _crash_after_checkpoint(_with_checkpoints(make_job(max_steps=None, hyperparameters=HP)), 4)
    checkpoint = next(e for e in crashed if e["type"] == "checkpoint" and e["step"] == 4)
    body = store.uploads[CKPT]
    assert hashlib.sha256(body).hexdigest() == checkpoint["sha256"] and len(body) == checkpoint["size"]
    store.objects["/ckpt/a0/saved.pt"] = body
    del store.uploads["/out/adapter_model.safetensors"]

    resume = {"url": store.url("/ckpt/a0/saved.pt"), "step": 4, "sha256": checkpoint["sha256"]}
    resumed = run_handler(_with_checkpoints(make_job(max_steps=None, hyperparameters=HP), resume=resume,
                                            path="/ckpt/a1/checkpoint.pt"))
    check_events(resumed, event_validator)
    training = next(e for e in resumed if e.get("stage") == "training")
    assert training["resumed_from_step"] == 4 and "resumed from the checkpoint at step 4" in training["message"]
    before, after = _metrics(full), _metrics(resumed)
    assert sorted(after) == list(range(5, total + 1)), "no step before the checkpoint is recomputed"
    for step in after:
        for key in ("train_loss", "grad_norm", "learning_rate", "epoch"):
            assert after[step][key] == before[step][key], (step, key)
    evals = lambda events: [(e["step"], e["eval_loss"]) for e in events if e["type"] == "eval"]  # noqa: E731
    assert evals(resumed) == [x for x in evals(full) if x[0] > 4]
    assert resumed[-1]["metrics"]["final_train_loss"] == full[-1]["metrics"]["final_train_loss"]
    assert resumed[-1]["metrics"]["train_tokens"] == full[-1]["metrics"]["train_tokens"], "counters carried over"
    assert store.uploads["/out/adapter_model.safetensors"] == adapter, "the same adapter, byte for byte"


def test_a_checkpoint_that_does_not_match_starts_over_and_says_why(store, make_job, event_validator):
    run_handler(_with_checkpoints(make_job()))
    body = store.uploads[CKPT]
    store.objects["/ckpt/saved.pt"] = body
    wrong_sha = {"url": store.url("/ckpt/saved.pt"), "step": 5, "sha256": "0" * 64}
    events = run_handler(_with_checkpoints(make_job(), resume=wrong_sha))
    check_events(events, event_validator)
    training = next(e for e in events if e.get("stage") == "training")
    assert "resumed_from_step" not in training and "training starts over" in training["message"], training
    assert min(_metrics(events)) == 1 and events[-1]["status"] == "succeeded"

    # The right file for another configuration: refused by its fingerprint.
    other = {"url": store.url("/ckpt/saved.pt"), "step": 5, "sha256": hashlib.sha256(body).hexdigest()}
    events = run_handler(_with_checkpoints(make_job(hyperparameters={"learning_rate": 5e-4}), resume=other))
    training = next(e for e in events if e.get("stage") == "training")
    assert "another configuration (differs in: hyperparameters)" in training["message"], training
    assert events[-1]["status"] == "succeeded"


def test_a_newer_checkpoint_of_the_same_attempt_than_recorded_is_used(store, make_job, event_validator):
    """A cancel or a crash can cut off a checkpoint's event after its upload: the file is then newer than
    the platform's record, and it is the better place to resume."""
    crashed = _crash_after_checkpoint(_with_checkpoints(make_job(max_steps=None, hyperparameters=HP)), 4)
    recorded = next(e for e in crashed if e["type"] == "checkpoint" and e["step"] == 3)
    store.objects["/ckpt/a0/saved.pt"] = store.uploads[CKPT]  # holds step 4
    resume = {"url": store.url("/ckpt/a0/saved.pt"), "step": 3, "sha256": recorded["sha256"]}
    events = run_handler(_with_checkpoints(make_job(max_steps=None, hyperparameters=HP), resume=resume,
                                           path="/ckpt/a1/checkpoint.pt"))
    check_events(events, event_validator)
    training = next(e for e in events if e.get("stage") == "training")
    assert training["resumed_from_step"] == 4 and min(_metrics(events)) == 5

    # A file older than the record is not this run's latest state: start over.
    resume["step"] = 5
    events = run_handler(_with_checkpoints(make_job(max_steps=None, hyperparameters=HP), resume=resume,
                                           path="/ckpt/a1/checkpoint.pt"))
    training = next(e for e in events if e.get("stage") == "training")
    assert "older than the recorded step 5" in training["message"] and min(_metrics(events)) == 1


def test_a_failed_checkpoint_upload_does_not_stop_training(store, make_job, event_validator):
    store.fail[CKPT] = [403] * 100
    events = run_handler(_with_checkpoints(make_job()))
    check_events(events, event_validator)
    assert events[-1]["status"] == "succeeded"
    assert not any(e["type"] == "checkpoint" for e in events), "no event for a checkpoint that was not saved"


@pytest.mark.parametrize("mutate", [
    lambda c: c.update(every_s=-1),
    lambda c: c.update(upload_url="ftp://x/y"),
    lambda c: c.update(resume={"url": "http://h/c", "step": 3, "sha256": "abc"}),
    lambda c: c.update(resume={"url": "http://h/c", "step": 0, "sha256": "0" * 64}),
    lambda c: c.update(extra=1),
], ids=["negative_interval", "url", "sha", "step0", "extra"])
def test_invalid_checkpoint_input(make_job, mutate, input_validator, event_validator):
    job = _with_checkpoints(make_job())
    mutate(job["input"]["checkpoint"])
    assert not input_validator.is_valid(job["input"]), "schema and Python validator agree"
    events = run_handler(job)
    assert failed(events)["error_code"] == "invalid_input" and len(events) == 1


def test_progress_is_throttled_by_time(make_job, event_validator):
    events = run_handler(make_job(report_interval_s=3600))
    check_events(events, event_validator)
    # The first step reports at once; then nothing until the last step, whatever report_every_steps says.
    assert sorted(_metrics(events)) == [1, 6]


# ---- GPU readings -----------------------------------------------------------------------------------------------


def test_gpu_use_and_memory_come_from_nvml(monkeypatch):
    import sys

    import torch

    from lora_worker.train import GpuStats

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i),
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=18 * 2**30),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    stats = GpuStats("cuda")
    assert stats._handle == ("gpu", 5), "torch's device 1 is the host's GPU 5"
    assert stats.read() == (87.0, 18.0)
    assert GpuStats("cpu").read() == (None, None), "no reading on CPU, never a made-up one"


# ---- templates and memory -------------------------------------------------------------------------------------


def test_a_base_model_without_a_template_learns_to_stop_at_its_own_eos():
    from transformers import AutoTokenizer

    from lora_worker import demo_model, model
    from lora_worker.data import IGNORE_INDEX, encode_all

    tok = AutoTokenizer.from_pretrained(demo_model.ensure_demo_model(), local_files_only=True)
    tok.chat_template = None
    tok.chat_template = model.BASE_CHAT_TEMPLATE
    msgs = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi there."}]
    enc = encode_all(tok, [msgs], 128).examples[0]
    labelled = [t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX]
    assert tok.eos_token_id in labelled, "the reply's end is the model's EOS, and it is trained on"
    assert tok.decode(labelled).strip().startswith("Hi there.")


def test_gradient_checkpointing_is_chosen_by_the_memory_estimate():
    from lora_worker.model import activation_bytes, needs_gradient_checkpointing

    llama8b = types.SimpleNamespace(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32)
    demo = types.SimpleNamespace(hidden_size=64, intermediate_size=128, num_hidden_layers=2)
    gib = 2**30
    # Batch 4 × 2048 tokens on a 24 GB card with the 4-bit 8B loaded (~18 GiB free): it must checkpoint.
    assert needs_gradient_checkpointing(llama8b, 4 * 2048, 18 * gib)
    # A 1k-token micro-batch of the same model on an 80 GB card fits without.
    assert not needs_gradient_checkpointing(llama8b, 1024, 74 * gib)
    assert not needs_gradient_checkpointing(demo, 4 * 2048, 1 * gib)
    full = activation_bytes(4096, 14336, 32, 8192, False)
    kept = activation_bytes(4096, 14336, 32, 8192, True)
    assert 40 * gib < full < 50 * gib and kept < 4 * gib, (full / gib, kept / gib)


def test_gradient_checkpointing_gives_the_same_gradients():
    import torch

    from lora_worker import model as model_mod
    from lora_worker.contract import DEMO_MODEL, Hyperparameters
    from lora_worker.train import compute_loss

    hp = Hyperparameters(learning_rate=1e-3, batch_size=2, gradient_accumulation_steps=1, epochs=1, rank=4,
                         alpha=8, dropout=0.0, max_seq_len=64, warmup_ratio=0.0, quantization="none",
                         eval_fraction=0.0, seed=3)
    tok = model_mod.load_tokenizer(DEMO_MODEL)
    ids = torch.randint(0, 700, (2, 24), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    def grads(checkpointing: bool) -> dict:
        loaded = model_mod.load(DEMO_MODEL, hp, "cpu", "none", tok)
        if checkpointing:
            base = loaded.model.get_base_model()
            model_mod.enable_gradient_checkpointing(base)
            assert base.is_gradient_checkpointing
        loaded.model.train()
        loss, _ = compute_loss(loaded.model, batch)
        loss.backward()
        return {n: p.grad.clone() for n, p in loaded.model.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and plain
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], rtol=1e-5, atol=1e-7)


def test_only_the_adapter_trains():
    from lora_worker import model as model_mod
    from lora_worker.contract import DEMO_MODEL, Hyperparameters

    hp = Hyperparameters(learning_rate=1e-3, batch_size=2, gradient_accumulation_steps=1, epochs=1, rank=4,
                         alpha=8, dropout=0.0, max_seq_len=64, warmup_ratio=0.0, quantization="none",
                         eval_fraction=0.0, seed=3)
    loaded = model_mod.load(DEMO_MODEL, hp, "cpu", "none", model_mod.load_tokenizer(DEMO_MODEL))
    trainable = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable), trainable
