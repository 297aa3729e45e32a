"""The training loop: a generator, so the handler can stream metrics while the model trains.

A custom loop rather than HF Trainer because Trainer owns control flow (callbacks cannot yield).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from . import contract
from .data import IGNORE_INDEX, Encoded, length_grouped_order, make_batches, steps_per_epoch
from .errors import WorkerError

log = logging.getLogger(__name__)


@dataclass
class Summary:
    total_steps: int
    final_train_loss: float
    final_eval_loss: float | None
    train_runtime_s: float
    train_tokens: int
    # "deadline" when training stopped at the job's time limit (the adapter so far is still saved).
    stopped_early: str | None = None

    @property
    def tokens_per_sec(self) -> float:
        return self.train_tokens / self.train_runtime_s if self.train_runtime_s > 0 else 0.0


def total_steps_for(n_train: int, hp, max_steps: int | None) -> int:
    total = steps_per_epoch(n_train, hp.batch_size, hp.gradient_accumulation_steps) * hp.epochs
    return min(total, max_steps) if max_steps is not None else total


def lr_factor(step_idx: int, total: int, warmup: int) -> float:
    """Linear warmup then linear decay, evaluated for 0-based step_idx; never 0 so no step is wasted."""
    if step_idx < warmup:
        return (step_idx + 1) / (warmup + 1)
    return max(0.0, (total - step_idx) / max(1, total - warmup))


# Rows of logits computed at once: the vocabulary-sized logits exist for one chunk at a time.
LOSS_CHUNK = 1024


def compute_loss(model, batch):
    """Summed token cross-entropy over labelled positions and their count.

    Only labelled positions go through the output head, in chunks: the full (batch × sequence ×
    vocabulary) fp32 logits — gigabytes at a 128k vocabulary — are never materialised, and prompt
    tokens (most of a chat example) cost no head compute. Summing (not averaging) per micro-batch lets
    gradient accumulation normalise by the label tokens of the whole optimizer step, so short and long
    examples weigh the same however they are batched. Module-level so tests can substitute it.
    """
    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    hidden = out.last_hidden_state[:, :-1, :]
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    rows, targets = hidden[keep], labels[keep]
    head = base.get_output_embeddings()
    softcap = getattr(base.config, "final_logit_softcapping", None)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for i in range(0, rows.size(0), LOSS_CHUNK):
        logits = head(rows[i:i + LOSS_CHUNK]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        total = total + F.cross_entropy(logits, targets[i:i + LOSS_CHUNK], reduction="sum")
    return total, int(keep.sum())


def _to(batch: dict, device: str) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class GpuStats:
    """GPU utilisation and memory in use from NVML (nvidia-ml-py), for the device torch trains on.
    Readings are dropped (None) on CPU or when NVML is unavailable, never guessed."""

    def __init__(self, device: str):
        self._handle = None
        self._nvml = None
        if device != "cuda":
            return
        try:
            import pynvml
            import torch

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(_physical_index(torch.cuda.current_device()))
        except Exception as e:  # noqa: BLE001 - a missing reading is not worth failing a job
            log.warning("GPU utilisation and memory will not be reported: NVML unavailable (%s)", e)
            self._handle = None

    def read(self) -> tuple[float | None, float | None]:
        """(utilisation percent, memory in use in GiB)."""
        if self._handle is None:
            return None, None
        try:
            util = float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
            used = float(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used) / 2**30
            return util, used
        except Exception:  # noqa: BLE001 - transient NVML errors drop one reading
            return None, None


def _physical_index(index: int) -> int:
    """NVML numbers every GPU of the host; torch only those CUDA_VISIBLE_DEVICES lists."""
    import os

    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if index < len(visible) and visible[index].isdigit():
        return int(visible[index])
    return index


def _label_tokens(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def evaluate(model, batches: list[dict], device: str) -> float:
    import torch

    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for b in batches:
            s, k = compute_loss(model, _to(b, device))
            total += float(s)
            n += k
    model.train()
    return total / max(1, n)


class CheckpointSink:
    """Where checkpoints go: `save` writes one with the given writer, uploads it and returns its event
    (None when the upload failed: a checkpoint is insurance, never a reason to stop training)."""

    every_s: float
    fingerprint: dict

    def save(self, step: int, write: Callable[[object], None], elapsed_s: float) -> dict | None:
        raise NotImplementedError


def train(loaded, train_set: list[Encoded], eval_set: list[Encoded], hp, report_every: int,
          max_steps: int | None, elapsed: Callable[[], float], control=None, *, report_interval_s: float = 0.0,
          checkpoints: CheckpointSink | None = None, resume: dict | None = None) -> Iterator[dict]:
    """Yields metrics/eval/checkpoint events; returns a Summary (via StopIteration, use `yield from`).

    `control` is checked every micro-batch: a cancel raises at once; at the deadline training stops after
    the current optimizer step, evaluates and returns, so the adapter so far is saved in time.
    Metrics are reported every `report_every` steps but at most once per `report_interval_s`.
    With `checkpoints`, a checkpoint is saved every `checkpoints.every_s` seconds of training; `resume`
    (a checkpoint read by `checkpoint.read`) continues a run exactly where that checkpoint was taken."""
    import torch

    from . import checkpoint as ckpt
    from .control import Control

    control = control or Control()
    stopped_early: str | None = None

    model, device = loaded.model, loaded.device
    pad_id = loaded.tokenizer.pad_token_id
    check_token_ids(model, train_set + eval_set)
    torch.manual_seed(hp.seed)  # dropout masks
    rng = random.Random(hp.seed)

    ga = hp.gradient_accumulation_steps
    spe = steps_per_epoch(len(train_set), hp.batch_size, ga)
    total = total_steps_for(len(train_set), hp, max_steps)
    warmup = int(round(hp.warmup_ratio * total))
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda i: lr_factor(i, total, warmup))
    eval_batches = make_batches(eval_set, hp.batch_size, list(range(len(eval_set))), pad_id) if eval_set else []

    position = ckpt.Position(epoch=0, micro=0, step=0)
    counters = ckpt.Counters()
    if resume is not None:
        try:
            restored = ckpt.restore(resume, model, optim, sched)
        except ckpt.Unusable as e:
            raise WorkerError("internal", f"the checkpoint matched this run but could not be restored: {e}") from None
        position, counters = restored.position, restored.counters
        rng.setstate(restored.order_rng_state)
        log.info("resumed at step %d (epoch %d, micro-batch %d)", position.step, position.epoch, position.micro)

    model.train()
    step = position.step
    gpu = GpuStats(device)
    start = time.monotonic()
    win_start, win_tokens, win_losses, win_grad_norms = start, 0, [], []
    last_report = float("-inf")
    last_checkpoint = start
    eval_s = 0.0  # time spent evaluating or checkpointing: not training throughput

    for epoch in range(position.epoch, hp.epochs):
        # Seeded (same order for the same seed), batches of similar lengths (less padding). The RNG's state
        # before the draw is what a checkpoint keeps, so a resumed run draws this epoch's order again.
        order_rng_state = rng.getstate()
        order = length_grouped_order([e.n_tokens for e in train_set], hp.batch_size, rng)
        micro = make_batches(train_set, hp.batch_size, order, pad_id)
        first = position.micro if epoch == position.epoch else 0
        for g in range(first, len(micro), ga):
            if step >= total:
                break
            if control.past_deadline():
                stopped_early = "deadline"
                log.warning("deadline reached at step %d of %d: stopping to save the adapter", step, total)
                break
            group = micro[g:g + ga]
            n_labels = max(1, sum(_label_tokens(b) for b in group))
            step_loss = 0.0
            for b in group:
                control.check()
                b = _to(b, device)
                loss_sum, _ = compute_loss(model, b)
                loss = loss_sum / n_labels
                if not torch.isfinite(loss):
                    raise WorkerError("nan_loss", f"training loss became {float(loss.detach())} at step {step + 1}")
                loss.backward()
                step_loss += float(loss.detach())
                tokens = int(b["attention_mask"].sum())
                counters.train_tokens += tokens
                win_tokens += tokens
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))  # pre-clip norm is returned
            if not math.isfinite(grad_norm):
                raise WorkerError("nan_loss", f"gradient norm became {grad_norm} at step {step + 1}")
            lr_used = optim.param_groups[0]["lr"]
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            step += 1
            win_losses.append(step_loss)
            win_grad_norms.append(grad_norm)
            counters.last_loss = step_loss

            now = time.monotonic()
            due = step % report_every == 0 and now - last_report >= report_interval_s
            if due or step == total or control.past_deadline():
                window_loss = sum(win_losses) / len(win_losses)
                # The window's mean, like the loss: one step's norm is noise when reports are sparse.
                window_grad_norm = sum(win_grad_norms) / len(win_grad_norms)
                util, memory = gpu.read()
                yield contract.metrics_event(
                    step=step, total_steps=total, epoch=step / spe, train_loss=window_loss,
                    learning_rate=lr_used, grad_norm=window_grad_norm,
                    tokens_per_sec=win_tokens / max(now - win_start, 1e-9), gpu_util=util,
                    gpu_memory_gb=memory, elapsed_s=elapsed(),
                )
                counters.last_loss = window_loss
                last_report = now
                win_start, win_tokens, win_losses, win_grad_norms = now, 0, [], []

            if checkpoints is not None and step < total and now - last_checkpoint >= checkpoints.every_s:
                at = ckpt.Position(epoch=epoch, micro=g + ga, step=step)
                counters.train_runtime_s += now - start - eval_s
                start, eval_s = now, 0.0
                event = checkpoints.save(step, lambda path: ckpt.save(
                    path, fingerprint=checkpoints.fingerprint, model=model, optimizer=optim, scheduler=sched,
                    order_rng_state=order_rng_state, position=at, counters=counters), elapsed())
                if event is not None:
                    yield event
                last_checkpoint = time.monotonic()
                eval_s += last_checkpoint - now
                win_start += last_checkpoint - now  # the next window's tokens/s excludes it
        # End of epoch (or the max_steps cut, or the deadline): evaluate once per step count reached.
        if eval_batches and step != counters.last_eval_step and (step == total or step % spe == 0 or stopped_early):
            eval_started = time.monotonic()
            counters.last_eval = evaluate(model, eval_batches, device)
            eval_s += time.monotonic() - eval_started
            win_start += time.monotonic() - eval_started  # the next window's tokens/s excludes it
            if not math.isfinite(counters.last_eval):
                raise WorkerError("nan_loss", f"eval loss became {counters.last_eval} at step {step}")
            counters.last_eval_step = step
            yield contract.eval_event(step=step, epoch=step / spe, eval_loss=counters.last_eval,
                                      elapsed_s=elapsed())
        if step >= total or stopped_early:
            break

    return Summary(total_steps=step, final_train_loss=counters.last_loss, final_eval_loss=counters.last_eval,
                   train_runtime_s=counters.train_runtime_s + time.monotonic() - start - eval_s,
                   train_tokens=counters.train_tokens, stopped_early=stopped_early)


def check_token_ids(model, examples: list[Encoded]) -> None:
    """Every token id must index the model's embedding: a tokenizer from another model would
    otherwise crash on the GPU mid-run (or, worse, train on the wrong rows)."""
    size = model.get_input_embeddings().num_embeddings
    top = max((max(e.input_ids) for e in examples if e.input_ids), default=-1)
    if top >= size:
        raise WorkerError("model_load_failed", f"token id {top} is outside the model's embedding table "
                          f"({size} rows): the tokenizer does not belong to this model",
                          "use the tokenizer shipped with the base model")
