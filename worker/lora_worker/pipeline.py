"""One job end to end: validate → download → load → tokenise → train → save → upload, as a stream of events."""

from __future__ import annotations

import gc
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from . import checkpoint as ckpt, contract, data, model as model_mod, samples as samples_mod, train as train_mod, transfer
from .control import Cancelled, Control
from .errors import HINTS, WorkerError, is_oom

log = logging.getLogger(__name__)


def control_for(job: dict) -> Control:
    """The stop flag and deadline of a job (its execution timeout, when the platform sent one)."""
    raw = job.get("input") if isinstance(job, dict) else None
    timeout = raw.get("execution_timeout_s") if isinstance(raw, dict) else None
    ok = isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0
    return Control(float(timeout) if ok else None)


def run(job: dict, control: Control | None = None) -> Iterator[dict]:
    """Yields contract events; expected failures end with a `result/failed` event instead of an exception.
    A cancel (through `control`) ends the stream without a result: nobody is waiting for one."""
    control = control or control_for(job)
    t0 = time.monotonic()

    def elapsed() -> float:
        return time.monotonic() - t0

    state: dict[str, Any] = {}
    try:
        raw = job.get("input") if isinstance(job, dict) else None
        inp = contract.validate_input(raw)
        # Checked before any GPU time is spent: without these two URLs the result could never be delivered.
        missing = [n for n in contract.REQUIRED_UPLOADS if n not in inp.upload_urls]
        if missing:
            raise WorkerError("upload_failed", f"no upload URL for required file(s): {', '.join(missing)}",
                              "the platform must offer upload URLs for adapter_config.json and "
                              "adapter_model.safetensors; this is a platform bug, report it")
        with tempfile.TemporaryDirectory(prefix="lora-job-") as work:
            yield from _run(inp, Path(work), elapsed, state, control)
    except Cancelled:
        log.warning("job cancelled after %.1f s: stopped", elapsed())
    except WorkerError as e:
        log.warning("job failed: %s: %s", e.code, e.message)
        yield contract.failed_event(e)
    except Exception as e:  # noqa: BLE001 - only OOM is expected here; everything else is a bug and re-raised
        if not is_oom(e):
            raise
        log.warning("out of memory: %s", e)
        yield contract.failed_event(WorkerError("out_of_memory", f"ran out of GPU memory: {e}"))
    finally:
        _release(state)


def _release(state: dict) -> None:
    # RunPod keeps the process warm between jobs: drop the model and return GPU memory to the pool.
    state.clear()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort cleanup
        pass


def _run(inp: contract.JobInput, work: Path, elapsed, state: dict, control: Control) -> Iterator[dict]:
    hp = inp.hp
    # Where it trains is decided first: a worker that cannot train this model stops before any
    # download (no_gpu), so a misrouted job costs seconds, not an execution timeout.
    device, quant_used, note = model_mod.plan(hp.quantization, inp.base_model)

    yield contract.stage_event("downloading_dataset", "downloading the dataset", elapsed())
    ds_path = work / "dataset.jsonl"
    try:
        n_bytes = transfer.download(inp.dataset_url, ds_path, control.check)
    except transfer.TransferError as e:
        raise WorkerError("dataset_download_failed", str(e)) from None
    control.check()
    examples = data.load_jsonl(ds_path)
    log.info("dataset: %d bytes, %d examples", n_bytes, len(examples))

    # Tokenised before the model loads: a dataset the model's template cannot render fails before
    # any GPU memory is taken, and the loaded model never waits on the CPU-bound encoding.
    tokenizer = model_mod.load_tokenizer(inp.base_model)
    # Split before encoding: the held-out examples do not depend on max_seq_len or the tokenizer.
    train_idx, eval_idx = data.split_indices(len(examples), hp.eval_fraction, hp.seed)
    train_enc = data.encode_all(tokenizer, [examples[i] for i in train_idx], hp.max_seq_len, control.check)
    eval_enc = data.encode_all(tokenizer, [examples[i] for i in eval_idx], hp.max_seq_len, control.check)
    train_set, eval_set = train_enc.examples, eval_enc.examples
    if not train_set:
        raise WorkerError("dataset_invalid", f"none of the {len(train_idx)} training examples has assistant tokens "
                          f"left within max_seq_len={hp.max_seq_len}", "increase max_seq_len or shorten the prompts")
    dropped = train_enc.dropped + eval_enc.dropped
    truncated = train_enc.truncated + eval_enc.truncated

    # The checkpoint is fetched before the model loads, so the GPU is not billed while it downloads.
    total = train_mod.total_steps_for(len(train_set), hp, inp.max_steps)
    fingerprint = ckpt.fingerprint(inp.base_model, hp, len(train_set), len(eval_set), total)
    resume, resume_note = _resume_state(inp.checkpoint, work, fingerprint)
    control.check()

    yield contract.stage_event("loading_model", f"loading {inp.base_model}: {note}", elapsed())
    loaded = model_mod.load(inp.base_model, hp, device, quant_used, tokenizer)
    state["loaded"] = loaded
    control.check()

    resumed_from = resume["position"]["step"] if resume is not None else None
    msg = f"training {total} steps on {len(train_set)} examples ({len(eval_set)} held out for eval)"
    if resumed_from:
        msg += f"; resumed from the checkpoint at step {resumed_from}"
    elif resume_note:
        msg += f"; {resume_note}"
    if dropped:
        msg += f"; {dropped} example(s) dropped: no assistant tokens within max_seq_len"
    if truncated:
        msg += f"; {truncated} example(s) truncated to max_seq_len={hp.max_seq_len}"
    yield contract.stage_event("training", msg, elapsed(), total_steps=total, train_examples=len(train_set),
                               eval_examples=len(eval_set), resumed_from_step=resumed_from)
    sink = _Uploader(inp.checkpoint, work, fingerprint) if inp.checkpoint is not None else None
    summary = yield from train_mod.train(loaded, train_set, eval_set, hp, inp.report_every_steps,
                                         inp.max_steps, elapsed, control, report_interval_s=inp.report_interval_s,
                                         checkpoints=sink, resume=resume)
    control.check()

    # Before/after answers to held-out prompts: what the adapter learned, without deploying it.
    samples = samples_mod.generate(loaded, [examples[i] for i in eval_idx], control.check)

    yield contract.stage_event("saving", "saving the adapter and tokenizer", elapsed())
    out = work / "adapter"
    # The config names the base model as the job did (the demo model's local build path would
    # mean nothing on the user's machine).
    for config in loaded.model.peft_config.values():
        config.base_model_name_or_path = inp.base_model
    # Only the adapter: the base model's own output head (the demo adapts it) stays unchanged, so
    # peft need not copy it into the adapter file.
    loaded.model.save_pretrained(out, safe_serialization=True, save_embedding_layers=False)
    loaded.tokenizer.save_pretrained(out)

    yield contract.stage_event("uploading", "uploading the adapter files", elapsed())
    files = _upload_all(out, inp.upload_urls)
    control.check()

    yield contract.succeeded_event(
        files=files, final_train_loss=summary.final_train_loss, final_eval_loss=summary.final_eval_loss,
        total_steps=summary.total_steps, train_runtime_s=summary.train_runtime_s,
        tokens_per_sec=summary.tokens_per_sec, train_tokens=summary.train_tokens,
        quantization_used=loaded.quantization_used, device=loaded.device,
        stopped_early=summary.stopped_early, samples=samples,
    )


def _resume_state(plan: contract.CheckpointPlan | None, work: Path, fingerprint: dict) -> tuple[dict | None, str]:
    """The checkpoint to continue from, read and checked; or None and why the run starts over instead.
    A checkpoint that cannot be used costs the recomputation, never the run: training starts from step 0."""
    if plan is None or plan.resume is None:
        return None, ""
    path = work / "resume.pt"
    try:
        transfer.download(plan.resume.url, path)
        _, sha = transfer.file_digest(path)
        state = ckpt.read(path, fingerprint)
        step = state["position"]["step"]
        # The attempt may have saved a newer checkpoint than the platform recorded (it was cancelled or
        # lost before that event was read): the same run's later state, so the better place to resume.
        if step < plan.resume.step:
            raise ckpt.Unusable(f"it is at step {step}, older than the recorded step {plan.resume.step}")
        if step == plan.resume.step and sha != plan.resume.sha256:
            raise ckpt.Unusable(f"its sha256 is {sha}, the platform recorded {plan.resume.sha256}")
        if step > plan.resume.step:
            log.info("the checkpoint file is at step %d, newer than the recorded %d: resuming there",
                     step, plan.resume.step)
        return state, ""
    except (transfer.TransferError, ckpt.Unusable) as e:
        log.warning("not resuming from the checkpoint at step %d: %s", plan.resume.step, e)
        return None, f"the checkpoint at step {plan.resume.step} could not be used ({e}), so training starts over"
    finally:
        path.unlink(missing_ok=True)


class _Uploader(train_mod.CheckpointSink):
    """Writes each checkpoint to the job's work directory and uploads it to the signed URL."""

    def __init__(self, plan: contract.CheckpointPlan, work: Path, fingerprint: dict):
        self.every_s = plan.every_s
        self.fingerprint = fingerprint
        self._url = plan.upload_url
        self._path = work / "checkpoint.pt"

    def save(self, step: int, write, elapsed_s: float) -> dict | None:
        started = time.monotonic()
        try:
            write(self._path)
            size, sha = transfer.file_digest(self._path)
            transfer.upload(self._url, self._path)
        except (transfer.TransferError, OSError) as e:
            log.warning("checkpoint at step %d not saved: %s", step, e)
            return None
        finally:
            self._path.unlink(missing_ok=True)
        log.info("checkpoint at step %d: %d bytes in %.1f s", step, size, time.monotonic() - started)
        return contract.checkpoint_event(step=step, size=size, sha256=sha, elapsed_s=elapsed_s)


def _upload_all(out: Path, urls: dict[str, str]) -> list[dict]:
    produced = {p.name: p for p in out.iterdir() if p.is_file()}
    for name in contract.REQUIRED_UPLOADS:
        if name not in produced:
            raise WorkerError("upload_failed", f"saving did not produce {name}", HINTS["internal"])
    files = []
    # Required files first: if they fail, nothing else is worth sending.
    optional = sorted(n for n in produced if n in urls and n not in contract.REQUIRED_UPLOADS)
    names = list(contract.REQUIRED_UPLOADS) + optional
    for name in names:
        path = produced[name]
        size, sha = transfer.file_digest(path)
        try:
            transfer.upload(urls[name], path)
        except transfer.TransferError as e:
            raise WorkerError("upload_failed", str(e)) from None
        files.append({"name": name, "size": size, "sha256": sha})
    skipped = sorted(set(produced) - set(names))
    if skipped:
        log.info("not uploaded (no URL offered): %s", ", ".join(skipped))
    return files
