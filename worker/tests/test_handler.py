"""Contract, behaviour and failure-mapping tests of the worker (CPU, demo model, a few steps)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONTRACT, WORKER, dataset_bytes, make_examples, run_handler

STAGE_ORDER = ["downloading_dataset", "loading_model", "training", "saving", "uploading"]


def check_events(events: list[dict], validator) -> None:
    """Every event is schema-valid, and the stream has the contract's ordering properties."""
    for ev in events:
        errors = sorted(validator.iter_errors(ev), key=str)
        assert not errors, f"{ev}: {[e.message for e in errors]}"
    results = [e for e in events if e["type"] == "result"]
    assert len(results) == 1 and events[-1]["type"] == "result", "exactly one result, and it is last"
    stages = [e["stage"] for e in events if e["type"] == "stage"]
    assert stages == STAGE_ORDER[: len(stages)], stages
    steps = [e["step"] for e in events if e["type"] == "metrics"]
    assert steps == sorted(set(steps)), "metrics steps strictly increasing"
    elapsed = [e["elapsed_s"] for e in events if "elapsed_s" in e]
    assert elapsed == sorted(elapsed), "elapsed_s is monotonic"


def failed(events: list[dict]) -> dict:
    res = events[-1]
    assert res["type"] == "result" and res["status"] == "failed", res
    assert res["hint"], "a failure always says what to do"
    return res


# ---- contract files ------------------------------------------------------------------------------------------


def test_examples_validate(event_validator, input_validator):
    examples = CONTRACT / "examples"
    kinds = {"stage", "metrics", "eval", "checkpoint", "result_succeeded", "result_failed"}
    assert {p.stem for p in examples.glob("*.json")} == kinds | {"input"}
    input_validator.validate(json.loads((examples / "input.json").read_text()))
    for kind in kinds:
        ev = json.loads((examples / f"{kind}.json").read_text())
        event_validator.validate(ev)
        # Each example matches the subschema of its own kind, not merely some branch of oneOf.
        schema = json.loads((CONTRACT / "event.schema.json").read_text())
        from jsonschema import Draft202012Validator

        sub = dict(schema["$defs"][kind], **{"$defs": schema["$defs"]})
        Draft202012Validator(sub).validate(ev)


def test_python_validator_accepts_the_example_input():
    from lora_worker.contract import validate_input

    inp = validate_input(json.loads((CONTRACT / "examples" / "input.json").read_text()))
    assert inp.hp.quantization == "nf4" and inp.max_steps is None


# ---- end to end ---------------------------------------------------------------------------------------------


@pytest.fixture
def e2e(store, make_job):
    store.fail["/ds.jsonl"] = [503]  # one transient failure: the download must retry and succeed
    job = make_job()
    events = run_handler(job)
    return job, events


def test_end_to_end_cpu(e2e, store, event_validator, tmp_path, monkeypatch):
    job, events = e2e
    check_events(events, event_validator)
    res = events[-1]
    assert res["status"] == "succeeded", res
    assert res["device"] == "cpu" and res["quantization_used"] == "none"

    training = next(e for e in events if e.get("stage") == "training")
    # 24 examples, eval_fraction 0.2 -> 5 eval / 19 train; ceil(ceil(19/2)/2) * 2 epochs = 10, capped at 6.
    assert (training["train_examples"], training["eval_examples"], training["total_steps"]) == (19, 5, 6)
    metrics = [e for e in events if e["type"] == "metrics"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]  # report_every_steps = 1
    assert metrics[-1]["step"] == metrics[-1]["total_steps"] == res["metrics"]["total_steps"] == 6
    assert all(m["gpu_util"] is None and m["tokens_per_sec"] > 0 for m in metrics)
    assert metrics[0]["learning_rate"] < metrics[1]["learning_rate"]  # warmup
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [5, 6]  # end of epoch 1 (5 steps/epoch) and the max_steps cut
    assert res["metrics"]["final_eval_loss"] == evals[-1]["eval_loss"]
    assert res["metrics"]["train_tokens"] > 0

    # Uploaded exactly the listed files, and their sizes and hashes match what the store received.
    names = [f["name"] for f in res["files"]]
    assert names[:2] == ["adapter_config.json", "adapter_model.safetensors"]
    assert set(names) <= set(job["input"]["upload_urls"])
    assert {"/out/" + n for n in names} == set(store.uploads)
    for f in res["files"]:
        body = store.uploads["/out/" + f["name"]]
        assert len(body) == f["size"] and hashlib.sha256(body).hexdigest() == f["sha256"]
    assert store.requests.count(("GET", "/ds.jsonl")) == 2

    # The adapter loads onto a freshly built copy of the demo model (separate cache => rebuilt from scratch).
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lora_worker import demo_model

    monkeypatch.setenv("LORA_WORKER_CACHE", str(tmp_path / "fresh-cache"))
    base_dir = demo_model.ensure_demo_model()
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    for n in names:
        (adapter_dir / n).write_bytes(store.uploads["/out/" + n])
    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(adapter_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": "Tell me about the sea."}],
                                  add_generation_prompt=True, tokenize=False)
    enc = tok(ids, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] == base.config.vocab_size and torch.isfinite(logits).all()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "training moved the adapter away from zero"


# ---- tokenisation -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_tokenizer():
    from transformers import AutoTokenizer

    from lora_worker import demo_model

    return AutoTokenizer.from_pretrained(demo_model.ensure_demo_model(), local_files_only=True)


def _runs(labels: list[int]) -> list[list[int]]:
    """Contiguous runs of labelled positions."""
    runs, cur = [], []
    for i, lab in enumerate(labels):
        if lab != -100:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


def test_assistant_only_labels(demo_tokenizer):
    from lora_worker.data import encode

    msgs = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the sea?"},
            {"role": "assistant", "content": "Salt water, mostly."},
            {"role": "user", "content": "And a lake?"},
            {"role": "assistant", "content": "Fresh water."}]
    enc = encode(demo_tokenizer, msgs, max_seq_len=512)
    assert enc is not None and len(enc.labels) == len(enc.input_ids)
    runs = _runs(enc.labels)
    assert len(runs) == 2, "one labelled span per assistant turn"
    for run, reply in zip(runs, ["Salt water, mostly.", "Fresh water."]):
        assert [enc.labels[i] for i in run] == [enc.input_ids[i] for i in run]
        # The span is exactly the reply plus its end-of-turn token: no header, system or user text.
        assert demo_tokenizer.decode([enc.input_ids[i] for i in run]) == reply + "<|eot_id|>"
    unlabelled = demo_tokenizer.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab == -100])
    assert "You are terse." in unlabelled and "What is the sea?" in unlabelled and "And a lake?" in unlabelled
    assert "Salt" not in unlabelled and "Fresh" not in unlabelled


def test_truncation_drops_examples_without_assistant_tokens(demo_tokenizer):
    from lora_worker.data import encode

    msgs = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    assert encode(demo_tokenizer, msgs, max_seq_len=32) is None
    enc = encode(demo_tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x " * 100}],
                 max_seq_len=32)
    assert enc is not None and len(enc.input_ids) == 32


def test_split_is_deterministic_and_bounded():
    from lora_worker.data import split_indices

    assert split_indices(24, 0.2, 7) == split_indices(24, 0.2, 7)
    tr, ev = split_indices(24, 0.2, 7)
    assert len(ev) == 5 and sorted(tr + ev) == list(range(24))
    assert len(split_indices(2, 0.01, 1)[1]) == 1  # at least one eval example
    assert split_indices(10, 0.0, 1)[1] == []
    assert split_indices(1, 0.5, 1) == ([0], [])


def test_total_steps_formula():
    from lora_worker.contract import Hyperparameters
    from lora_worker.train import total_steps_for

    hp = Hyperparameters(1e-4, 4, 3, 2, 8, 16, 0.0, 64, 0.0, "none", 0.0, 0)
    assert total_steps_for(50, hp, None) == 5 * 2  # ceil(ceil(50/4)=13 / 3) = 5 per epoch
    assert total_steps_for(50, hp, 3) == 3


# ---- failure mapping ----------------------------------------------------------------------------------------


def test_download_404(store, make_job, event_validator):
    job = make_job()
    job["input"]["dataset_url"] = store.url("/missing.jsonl")
    events = run_handler(job)
    check_events(events, event_validator)
    res = failed(events)
    assert res["error_code"] == "dataset_download_failed"
    assert "expired" in res["hint"] and "sig=" not in res["message"], "no signed query string in messages"


def _without(d: dict, key: str) -> dict:
    d = copy.deepcopy(d)
    d.pop(key)
    return d


def test_a_download_cut_off_mid_file_starts_again_and_trains_on_every_example(store, make_job, event_validator):
    store.fail["/ds.jsonl"] = ["cut"]
    events = run_handler(make_job())
    check_events(events, event_validator)
    assert events[-1]["status"] == "succeeded"
    assert [r for r in store.requests if r == ("GET", "/ds.jsonl")] == [("GET", "/ds.jsonl")] * 2
    training = next(e for e in events if e.get("stage") == "training")
    assert training["train_examples"] + training["eval_examples"] == 24, "the whole file, not the first half"


@pytest.mark.parametrize("mutate", [
    lambda i: i["hyperparameters"].update(epochs=0),
    lambda i: i.pop("dataset_url"),
    lambda i: i["hyperparameters"].pop("seed"),
    lambda i: i.update(contract_version=2),
    lambda i: i["hyperparameters"].update(batch_size=True),
    lambda i: i["hyperparameters"].update(quantization="int8"),
    lambda i: i.update(job_id="not-a-uuid"),
    lambda i: i.update(report_every_steps=0),
    lambda i: i.update(unexpected=1),
    lambda i: i["upload_urls"].update({"../x": "http://h/x"}),
], ids=["epochs0", "missing_url", "missing_seed", "version", "bool_int", "quant", "job_id", "report0", "extra",
        "path_name"])
def test_invalid_input(make_job, mutate, event_validator, input_validator):
    job = make_job()
    mutate(job["input"])
    assert not input_validator.is_valid(job["input"]), "schema and Python validator agree"
    events = run_handler(job)
    check_events(events, event_validator)
    assert failed(events)["error_code"] == "invalid_input"
    assert len(events) == 1, "nothing happens before validation"


def test_input_not_an_object(event_validator):
    events = run_handler({"id": "x", "input": "hello"})
    check_events(events, event_validator)
    assert failed(events)["error_code"] == "invalid_input"


def test_missing_required_upload_url(store, make_job, event_validator):
    job = make_job()
    del job["input"]["upload_urls"]["adapter_model.safetensors"]
    events = run_handler(job)
    check_events(events, event_validator)
    assert failed(events)["error_code"] == "upload_failed"
    assert ("GET", "/ds.jsonl") not in store.requests, "fails before spending time on the job"


def test_upload_server_error(store, make_job, event_validator):
    store.fail["/out/adapter_model.safetensors"] = [500] * 10  # outlasts the retries
    store.fail["/out/adapter_config.json"] = [502]  # transient: retried
    events = run_handler(make_job(max_steps=1))
    check_events(events, event_validator)
    res = failed(events)
    assert res["error_code"] == "upload_failed" and "HTTP 500" in res["message"]
    assert "/out/adapter_config.json" in store.uploads


def test_dataset_invalid(store, make_job, event_validator):
    store.objects["/ds.jsonl"] = dataset_bytes(make_examples(3)) + b"{not json\n"
    events = run_handler(make_job())
    check_events(events, event_validator)
    res = failed(events)
    assert res["error_code"] == "dataset_invalid" and "line 4" in res["message"]


def test_model_load_failed(make_job, event_validator, tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_WORKER_ALLOW_CPU", "1")  # past the GPU check, to the loader
    events = run_handler(make_job(base_model=str(tmp_path / "no-such-model")))
    check_events(events, event_validator)
    assert failed(events)["error_code"] == "model_load_failed"


def test_a_real_model_without_a_gpu_fails_at_once(make_job, event_validator, monkeypatch):
    """A CPU worker never trains a real model at GPU prices: no_gpu, before any download."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("LORA_WORKER_ALLOW_CPU", raising=False)
    events = run_handler(make_job(base_model="meta-llama/Llama-3.1-8B-Instruct"))
    check_events(events, event_validator)
    res = failed(events)
    assert res["error_code"] == "no_gpu", res
    assert "CUDA" in res["message"] and "CUDA version" in res["hint"]
    assert [e["type"] for e in events] == ["result"], "nothing was downloaded or loaded"


def test_nan_loss(make_job, monkeypatch, event_validator):
    from lora_worker import train

    real = train.compute_loss
    calls = {"n": 0}

    def nan_on_third(model, batch):
        calls["n"] += 1
        s, n = real(model, batch)
        return (s * float("nan"), n) if calls["n"] >= 3 else (s, n)

    monkeypatch.setattr(train, "compute_loss", nan_on_third)
    events = run_handler(make_job())
    check_events(events, event_validator)
    res = failed(events)
    assert res["error_code"] == "nan_loss" and "learning_rate" in res["hint"]
    assert [e["step"] for e in events if e["type"] == "metrics"] == [1], "metrics stop at the bad step"


def test_out_of_memory(make_job, monkeypatch, event_validator):
    import torch

    from lora_worker import train

    def oom(model, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(train, "compute_loss", oom)
    events = run_handler(make_job())
    check_events(events, event_validator)
    res = failed(events)
    assert res["error_code"] == "out_of_memory" and "batch_size" in res["hint"]


# ---- harness ------------------------------------------------------------------------------------------------


def _harness(job_text: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER / "harness.py"), "--job-id", "x"], input=job_text,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env}, cwd=WORKER)


def test_harness_streams_json_lines(make_job, event_validator):
    proc = _harness(json.dumps(make_job(max_steps=2)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    events = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    check_events(events, event_validator)
    assert events[-1]["status"] == "succeeded"
    assert all(line == json.dumps(e, separators=(",", ":")) for line, e in zip(lines, events)), "compact lines"


def test_harness_reports_handler_crash(make_job, event_validator):
    proc = _harness(json.dumps(make_job()), LORA_WORKER_TEST_CRASH="1")
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    event_validator.validate(lines[0])
    err = lines[-1]["__error__"]
    assert err["error_type"] == "RuntimeError" and "simulated" in err["error_message"]
    assert "Traceback" in err["error_traceback"]


def test_harness_rejects_non_json():
    proc = _harness("this is not json")
    assert proc.returncode == 1
    (line,) = proc.stdout.splitlines()
    err = json.loads(line)["__error__"]
    assert err["error_type"] == "JSONDecodeError"


def test_harness_exits_promptly_on_sigterm(make_job):
    import signal
    import time

    job = make_job(max_steps=None, hyperparameters={"epochs": 1000})  # far longer than the test waits
    proc = subprocess.Popen([sys.executable, str(WORKER / "harness.py"), "--job-id", "x"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=WORKER)
    try:
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        first = proc.stdout.readline()  # the worker is running the job
        assert json.loads(first)["stage"] == "downloading_dataset"
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
        assert time.monotonic() - t < 20
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _losses(events: list[dict]) -> list[float]:
    return [e["train_loss"] for e in events if e["type"] == "metrics"]


def test_the_same_seed_gives_the_same_run(make_job):
    """Seeded before the adapter is initialised and for the data order: bit-identical losses."""
    first = run_handler(make_job())
    second = run_handler(make_job())
    assert _losses(first) and _losses(first) == _losses(second)
    other = run_handler(make_job(hyperparameters={"seed": 8}))
    assert _losses(other) != _losses(first)


def test_token_ids_outside_the_embedding_fail_clearly(make_job, monkeypatch, event_validator):
    from lora_worker import train

    real = train.check_token_ids

    def shrunk(model, examples):
        model.get_input_embeddings().num_embeddings = 4  # as if the tokenizer were another model's
        real(model, examples)

    monkeypatch.setattr(train, "check_token_ids", shrunk)
    events = run_handler(make_job())
    check_events(events, event_validator)
    res = failed(events)
    assert res["error_code"] == "model_load_failed" and "embedding" in res["message"], res


def test_reported_grad_norm_is_the_window_mean(make_job, monkeypatch):
    import torch

    norms = iter([1.0, 3.0, 2.0, 6.0, 5.0, 7.0])
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: next(norms))
    events = run_handler(make_job(report_every_steps=2))
    reported = [e["grad_norm"] for e in events if e["type"] == "metrics"]
    assert reported == [2.0, 4.0, 6.0], reported


# ---- chat templates that cannot mislabel ------------------------------------------------------------------------


def _tokenizer_with(template: str):
    from transformers import AutoTokenizer

    from lora_worker import demo_model

    tok = AutoTokenizer.from_pretrained(demo_model.ensure_demo_model(), local_files_only=True)
    tok.chat_template = template
    return tok


TURN = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}"
GEN = "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
# Mistral's rule: strictly alternating user/assistant turns.
ALTERNATING = ("{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
               "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
               "{% endif %}" + TURN + "{% endfor %}" + GEN)
# Gemma's rule: no system role.
NO_SYSTEM = ("{% for message in messages %}{% if message['role'] == 'system' %}"
             "{{ raise_exception('System role not supported') }}{% endif %}" + TURN + "{% endfor %}" + GEN)
# A template that silently drops system messages.
DROPS_SYSTEM = "{% for message in messages %}{% if message['role'] != 'system' %}" + TURN + "{% endif %}{% endfor %}" + GEN
# A template whose full rendering is not an extension of its prefixes (a closing marker on the last turn only),
# so the worker falls back to locating each reply in the text.
REWRITES = "{% for message in messages %}" + TURN + "{% if loop.last %}<|end|>{% endif %}{% endfor %}" + GEN


def test_a_template_rule_the_dataset_breaks_is_a_clear_failure():
    from lora_worker.data import encode_all
    from lora_worker.errors import WorkerError

    tok = _tokenizer_with(ALTERNATING)
    ok = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    bad = [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"},
           {"role": "assistant", "content": "hello"}]
    with pytest.raises(WorkerError) as failure:
        encode_all(tok, [ok, bad], 128)
    assert failure.value.code == "dataset_incompatible"
    assert "example 2" in failure.value.message and "must alternate" in failure.value.message


@pytest.mark.parametrize("template", [NO_SYSTEM, DROPS_SYSTEM], ids=["refuses-system", "drops-system"])
def test_the_system_prompt_is_kept_when_the_template_has_no_place_for_it(template):
    from lora_worker.data import encode

    tok = _tokenizer_with(template)
    msgs = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello?"},
            {"role": "assistant", "content": "Bonjour."}]
    enc = encode(tok, msgs, 256)
    assert enc is not None
    unlabelled = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab == -100])
    labelled = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != -100])
    assert "Answer in French." in unlabelled and "Hello?" in unlabelled
    assert labelled.startswith("Bonjour.")


def test_a_short_reply_repeated_in_the_user_turn_labels_only_the_reply():
    from lora_worker.data import encode

    tok = _tokenizer_with(REWRITES)
    msgs = [{"role": "user", "content": "Just say yes please"}, {"role": "assistant", "content": "yes please"}]
    enc = encode(tok, msgs, 256)
    assert enc is not None
    runs = _runs(enc.labels)
    assert len(runs) == 1
    assert tok.decode([enc.input_ids[i] for i in runs[0]]).strip() == "yes please"
    unlabelled = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab == -100])
    assert "Just say yes please" in unlabelled


def test_truncated_examples_are_counted(demo_tokenizer):
    from lora_worker.data import encode_all

    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    long = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x " * 100}]
    hopeless = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    result = encode_all(demo_tokenizer, [short, long, hopeless], 32)
    assert (len(result.examples), result.truncated, result.dropped) == (2, 1, 1)


def test_the_eval_split_does_not_depend_on_max_seq_len(make_job, monkeypatch):
    from lora_worker import data

    real = data.encode_all
    seen: list[list] = []

    def recording(tokenizer, examples, max_seq_len, *rest):
        seen.append(examples)
        return real(tokenizer, examples, max_seq_len, *rest)

    monkeypatch.setattr(data, "encode_all", recording)
    run_handler(make_job(hyperparameters={"max_seq_len": 128}))
    run_handler(make_job(hyperparameters={"max_seq_len": 256}))
    # encode_all is called for the train part, then the eval part, in each run.
    assert len(seen) == 4 and seen[1] and seen[1] == seen[3]


# ---- memory: loss at labelled positions only ---------------------------------------------------------------------


def test_the_loss_at_labelled_positions_equals_the_full_loss(make_job):
    """The chunked head over labelled rows gives the loss (and the gradients) of the full-logits loss."""
    import torch
    import torch.nn.functional as F

    from lora_worker import contract, data, model as model_mod, train

    job = make_job()
    hp = contract.validate_input(job["input"]).hp
    tok = model_mod.load_tokenizer("tiny-random-llama")
    loaded = model_mod.load("tiny-random-llama", hp, "cpu", "none", tok)
    examples = [[{"role": "user", "content": f"question {i} " * (i + 1)},
                 {"role": "assistant", "content": f"answer {i}"}] for i in range(4)]
    encoded = data.encode_all(tok, examples, 128).examples
    batch = data.make_batches(encoded, 4, list(range(4)), tok.pad_token_id)[0]

    def full_loss():
        out = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = out.logits[:, :-1, :].float()
        labels = batch["labels"][:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                               ignore_index=data.IGNORE_INDEX, reduction="sum")

    expected = full_loss()
    expected.backward()
    expected_grads = [p.grad.clone() for p in loaded.model.parameters() if p.requires_grad]
    loaded.model.zero_grad(set_to_none=True)

    train.LOSS_CHUNK = 3  # several chunks even on this small batch
    got, n = train.compute_loss(loaded.model, batch)
    got.backward()
    grads = [p.grad for p in loaded.model.parameters() if p.requires_grad]
    assert n == int((batch["labels"][:, 1:] != data.IGNORE_INDEX).sum())
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), (float(got), float(expected))
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads, expected_grads))


def test_models_without_the_named_projections_get_all_linear_layers():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    from lora_worker.model import LORA_TARGETS, lora_targets

    tiny = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    assert lora_targets(LlamaForCausalLM(LlamaConfig(**tiny))) == list(LORA_TARGETS)
    assert lora_targets(GPTNeoXForCausalLM(GPTNeoXConfig(**tiny))) == "all-linear"


# ---- stopping: cancel and deadline -------------------------------------------------------------------------------


def _run_with(job: dict, control) -> list[dict]:
    import asyncio

    import handler

    async def collect():
        return [e async for e in handler.handler(job, control)]

    return asyncio.run(collect())


def test_a_cancel_during_the_download_stops_at_the_next_chunk(store, make_job, monkeypatch):
    from lora_worker import model as model_mod, transfer
    from lora_worker.control import Control

    monkeypatch.setattr(transfer, "CHUNK", 256)  # the 4 kB dataset arrives in many chunks
    control = Control()
    checks = {"n": 0}
    real_check = control.check

    def cancel_on_second_chunk():
        checks["n"] += 1
        if checks["n"] == 2:
            control.cancel()
        real_check()

    monkeypatch.setattr(control, "check", cancel_on_second_chunk)
    monkeypatch.setattr(model_mod, "load_tokenizer", lambda *_: pytest.fail("tokenised after the cancel"))
    events = _run_with(make_job(), control)
    assert [e.get("stage") for e in events] == ["downloading_dataset"], events
    assert checks["n"] == 2, "no chunk read after the cancel"
    assert store.requests.count(("GET", "/ds.jsonl")) == 1, "a cancel is not a failure to retry"


def test_a_cancel_while_tokenising_stops_between_examples(make_job, monkeypatch):
    from lora_worker import data, model as model_mod
    from lora_worker.control import Control

    control = Control()
    real = data.encode
    calls = {"n": 0}

    def cancel_on_first(tokenizer, messages, max_seq_len):
        calls["n"] += 1
        control.cancel()
        return real(tokenizer, messages, max_seq_len)

    monkeypatch.setattr(data, "encode", cancel_on_first)
    monkeypatch.setattr(model_mod, "load", lambda *_: pytest.fail("the model was loaded after the cancel"))
    events = _run_with(make_job(), control)
    assert calls["n"] == 1, "stopped at the next example"
    assert not any(e["type"] == "result" for e in events)


def test_a_cancel_during_training_stops_at_the_next_micro_batch(make_job, monkeypatch):
    from lora_worker import train
    from lora_worker.control import Control

    control = Control()
    real = train.compute_loss
    calls = {"n": 0}

    def cancel_on_third(model, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            control.cancel()
        return real(model, batch)

    monkeypatch.setattr(train, "compute_loss", cancel_on_third)
    events = _run_with(make_job(max_steps=50, hyperparameters={"epochs": 20}), control)
    assert calls["n"] == 3, "no micro-batch after the cancel"
    assert not any(e["type"] == "result" for e in events)
    assert not any(e.get("stage") == "saving" for e in events)


def test_a_handler_stopped_by_runpod_stops_its_pipeline(make_job):
    """RunPod cancels a job by cancelling the handler's task: the pipeline thread is told and stops."""
    import asyncio
    import threading

    import handler
    from lora_worker.control import Control

    control = Control()

    async def first_then_stop():
        gen = handler.handler(make_job(max_steps=None, hyperparameters={"epochs": 1000}), control)
        first = await gen.__anext__()
        await gen.aclose()  # what cancelling the consuming task does to the generator
        return first

    first = asyncio.run(first_then_stop())
    assert first["stage"] == "downloading_dataset"
    assert control.cancelled
    assert not any(t.name == "lora-pipeline" and t.is_alive() for t in threading.enumerate())


def test_the_deadline_saves_and_uploads_the_adapter_so_far(store, make_job, monkeypatch, event_validator):
    from lora_worker import train
    from lora_worker.control import Control

    control = Control(execution_timeout_s=3600)
    real = train.compute_loss
    calls = {"n": 0}

    def expire_on_fifth(model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            control.expire()
        return real(model, batch)

    monkeypatch.setattr(train, "compute_loss", expire_on_fifth)
    events = _run_with(make_job(max_steps=50, hyperparameters={"epochs": 20}), control)
    check_events(events, event_validator)
    result = events[-1]
    assert result["status"] == "succeeded" and result["stopped_early"] == "deadline", result
    # Micro-batches of 2 per optimizer step: the deadline came during step 3, which still finished.
    assert result["metrics"]["total_steps"] == 3
    assert "/out/adapter_model.safetensors" in store.uploads


def test_the_deadline_leaves_time_to_save():
    from lora_worker.control import Control

    ticks = iter([0.0, 100.0, 5000.0])
    control = Control(execution_timeout_s=3600, margin_s=120, clock=lambda: next(ticks))
    assert control.deadline == 3480.0
    assert not control.past_deadline()
    assert control.past_deadline()
    assert Control().deadline is None


# ---- cold starts ---------------------------------------------------------------------------------------------


def test_the_hugging_face_cache_goes_to_the_network_volume(tmp_path):
    from lora_worker.hub import configure_cache

    volume = tmp_path / "runpod-volume"
    assert configure_cache({}, volume) is None, "no volume: the default cache"
    volume.mkdir()
    env: dict = {}
    assert configure_cache(env, volume) == str(volume / "huggingface") == env["HF_HOME"]
    assert configure_cache({"HF_HOME": "/models"}, volume) == "/models", "the operator's setting wins"


def test_a_gated_model_says_to_set_hf_token(make_job, monkeypatch, event_validator):
    import transformers

    class GatedRepoError(Exception):
        pass

    def gated(*_, **__):
        raise GatedRepoError("401 Client Error: Access to model meta-llama/Llama-3.1-8B is restricted")

    monkeypatch.setenv("LORA_WORKER_ALLOW_CPU", "1")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", gated)
    events = run_handler(make_job(base_model="meta-llama/Llama-3.1-8B"))
    check_events(events, event_validator)
    res = failed(events)
    assert res["error_code"] == "model_load_failed" and "HF_TOKEN" in res["hint"], res


# ---- padding ---------------------------------------------------------------------------------------------------


def test_length_grouped_batches_cut_padding_and_keep_every_example():
    import random

    from lora_worker.data import length_grouped_order, padding_share

    rng = random.Random(1)
    lengths = [rng.choice([40, 60, 200, 900, 1500]) + rng.randrange(30) for _ in range(2000)]
    shuffled = list(range(len(lengths)))
    random.Random(7).shuffle(shuffled)
    grouped = length_grouped_order(lengths, 8, random.Random(7))
    assert sorted(grouped) == list(range(len(lengths))), "every example once per epoch"
    assert grouped == length_grouped_order(lengths, 8, random.Random(7)), "seeded"
    assert padding_share(lengths, 8, grouped) < padding_share(lengths, 8, shuffled) / 3


def test_the_throughput_benchmark_runs_both_loops_on_cpu():
    """worker/bench/throughput.py's CPU smoke test: the worker's loop and Trainer + PEFT both train."""
    sys.path.insert(0, str(WORKER / "bench"))
    import throughput

    rows = throughput.main(["--tiny", "--steps", "2"])
    assert [r[0] for r in rows] == ["ours", "Trainer + PEFT"]
    assert all(tps > 0 for _, tps, _, _ in rows)
    assert rows[0][3] <= rows[1][3], "length grouping pads no more than the shuffled sampler"


def test_the_result_carries_before_and_after_samples(store, make_job, event_validator):
    """Greedy answers to held-out prompts, from the base model and from the adapter, and the dataset's
    own reply; at most five, text only (no control characters reach the platform's jsonb)."""
    events = run_handler(make_job(hyperparameters={"eval_fraction": 0.3}))
    check_events(events, event_validator)
    samples = events[-1]["samples"]
    assert 1 <= len(samples) <= 5
    for sample in samples:
        assert set(sample) == {"prompt", "reference", "base", "adapter"}
        assert sample["prompt"].startswith("Tell me about") or sample["prompt"] == "Can you say it in fewer words?"
        assert all(c in "\n\t" or ord(c) >= 0x20 for field in sample.values() for c in field)
    # Without a held-out set there is nothing to compare on.
    events = run_handler(make_job(hyperparameters={"eval_fraction": 0.0}))
    assert "samples" not in events[-1]
