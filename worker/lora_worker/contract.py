"""Input validation and event constructors for the worker contract (version 1).

Kept dependency-free (no jsonschema at runtime): contract/*.schema.json describe the same shapes and the
tests check both against each other, so the schema files stay the single reference for the Rust side.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from . import CONTRACT_VERSION
from .errors import WorkerError

STAGES = ("downloading_dataset", "loading_model", "training", "saving", "uploading")
DEMO_MODEL = "tiny-random-llama"
# The platform offers these names; the two adapter files are what make the artifact usable at all.
REQUIRED_UPLOADS = ("adapter_config.json", "adapter_model.safetensors")

# Same pattern as contract/input.schema.json (canonical hyphenated form only).
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_TOP_KEYS = {
    "contract_version", "job_id", "base_model", "dataset_url", "hyperparameters",
    "upload_urls", "report_every_steps", "max_steps", "execution_timeout_s", "report_interval_s", "checkpoint",
}
_OPTIONAL_KEYS = {"max_steps", "execution_timeout_s", "report_interval_s", "checkpoint"}
# Metrics at most this often by default: a step never waits on a stream post, and a fast run does not
# flood the platform with one event per step.
DEFAULT_REPORT_INTERVAL_S = 1.0
_HP_KEYS = {
    "learning_rate", "batch_size", "gradient_accumulation_steps", "epochs", "rank", "alpha",
    "dropout", "max_seq_len", "warmup_ratio", "quantization", "eval_fraction", "seed",
}


@dataclass(frozen=True)
class Hyperparameters:
    learning_rate: float
    batch_size: int
    gradient_accumulation_steps: int
    epochs: int
    rank: int
    alpha: int
    dropout: float
    max_seq_len: int
    warmup_ratio: float
    quantization: str
    eval_fraction: float
    seed: int


@dataclass(frozen=True)
class Resume:
    """The checkpoint a run continues from (the platform's record of the latest one uploaded)."""
    url: str
    step: int
    sha256: str


@dataclass(frozen=True)
class CheckpointPlan:
    """Save a checkpoint every `every_s` seconds of training to `upload_url`; resume from `resume`."""
    every_s: float
    upload_url: str
    resume: Resume | None = None


@dataclass(frozen=True)
class JobInput:
    job_id: str
    base_model: str
    dataset_url: str
    hp: Hyperparameters
    upload_urls: dict[str, str]
    report_every_steps: int
    max_steps: int | None
    # RunPod's executionTimeout for this job: the worker stops training in time to save what it has.
    execution_timeout_s: int | None = None
    report_interval_s: float = DEFAULT_REPORT_INTERVAL_S
    checkpoint: CheckpointPlan | None = None


def _bad(msg: str) -> WorkerError:
    return WorkerError("invalid_input", msg)


def _int(obj: dict, key: str, lo: int, hi: int | None = None, where: str = "") -> int:
    v = obj.get(key)
    # bool is an int subclass in Python; JSON true must not pass as 1.
    if not isinstance(v, int) or isinstance(v, bool):
        raise _bad(f"{where}{key} must be an integer")
    if v < lo or (hi is not None and v > hi):
        raise _bad(f"{where}{key} must be between {lo} and {hi}" if hi is not None else f"{where}{key} must be >= {lo}")
    return v


def _float(obj: dict, key: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False,
           where: str = "") -> float:
    v = obj.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise _bad(f"{where}{key} must be a finite number")
    v = float(v)
    if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise _bad(f"{where}{key} must be in {lb}{lo}, {hi}{rb}")
    return v


def _http_url(v: Any, what: str) -> str:
    if not isinstance(v, str) or urlparse(v).scheme not in ("http", "https") or not urlparse(v).netloc:
        raise _bad(f"{what} must be an http(s) URL")
    return v


def validate_input(raw: Any) -> JobInput:
    """Checks types and ranges of job["input"]; raises WorkerError(invalid_input) with a precise message."""
    if not isinstance(raw, dict):
        raise _bad("input must be a JSON object")
    missing = sorted(k for k in _TOP_KEYS - _OPTIONAL_KEYS if k not in raw)
    if missing:
        raise _bad(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise _bad(f"unknown field(s): {', '.join(unknown)}")
    cv = raw["contract_version"]
    if cv != CONTRACT_VERSION or isinstance(cv, bool):
        raise _bad(f"contract_version must be {CONTRACT_VERSION} (got {cv!r}); the worker image and platform disagree")
    job_id = raw["job_id"]
    if not isinstance(job_id, str) or not _UUID_RE.fullmatch(job_id):
        raise _bad("job_id must be a UUID string (8-4-4-4-12 hex)")
    base_model = raw["base_model"]
    if not isinstance(base_model, str) or not base_model.strip() or len(base_model) > 1024:
        raise _bad("base_model must be a non-empty string")
    dataset_url = _http_url(raw["dataset_url"], "dataset_url")

    hp_raw = raw["hyperparameters"]
    if not isinstance(hp_raw, dict):
        raise _bad("hyperparameters must be an object")
    missing = sorted(k for k in _HP_KEYS if k not in hp_raw)
    if missing:
        raise _bad(f"missing hyperparameter(s): {', '.join(missing)}")
    unknown = sorted(set(hp_raw) - _HP_KEYS)
    if unknown:
        raise _bad(f"unknown hyperparameter(s): {', '.join(unknown)}")
    w = "hyperparameters."
    quant = hp_raw["quantization"]
    if quant not in ("nf4", "none"):
        raise _bad('hyperparameters.quantization must be "nf4" or "none"')
    hp = Hyperparameters(
        learning_rate=_float(hp_raw, "learning_rate", 0.0, 1e9, lo_open=True, where=w),
        batch_size=_int(hp_raw, "batch_size", 1, 4096, where=w),
        gradient_accumulation_steps=_int(hp_raw, "gradient_accumulation_steps", 1, 4096, where=w),
        epochs=_int(hp_raw, "epochs", 1, 1000, where=w),
        rank=_int(hp_raw, "rank", 1, 1024, where=w),
        alpha=_int(hp_raw, "alpha", 1, 4096, where=w),
        dropout=_float(hp_raw, "dropout", 0.0, 1.0, hi_open=True, where=w),
        max_seq_len=_int(hp_raw, "max_seq_len", 16, 1 << 20, where=w),
        warmup_ratio=_float(hp_raw, "warmup_ratio", 0.0, 1.0, hi_open=True, where=w),
        quantization=quant,
        eval_fraction=_float(hp_raw, "eval_fraction", 0.0, 1.0, hi_open=True, where=w),
        seed=_int(hp_raw, "seed", 0, 2**32 - 1, where=w),
    )

    uploads = raw["upload_urls"]
    if not isinstance(uploads, dict):
        raise _bad("upload_urls must be an object of file name -> URL")
    for name, url in uploads.items():
        # Names are plain file names; anything path-like would let the URL map escape the output dir.
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise _bad(f"upload_urls key {name!r} must be a plain file name")
        _http_url(url, f"upload_urls[{name!r}]")

    report_every = _int(raw, "report_every_steps", 1)
    max_steps = raw.get("max_steps")
    if max_steps is not None:
        max_steps = _int(raw, "max_steps", 1)
    timeout = raw.get("execution_timeout_s")
    if timeout is not None:
        timeout = _int(raw, "execution_timeout_s", 1)
    interval = DEFAULT_REPORT_INTERVAL_S
    if raw.get("report_interval_s") is not None:
        interval = _float(raw, "report_interval_s", 0.0, 3600.0)
    checkpoint = _checkpoint(raw.get("checkpoint"))
    return JobInput(job_id, base_model.strip(), dataset_url, hp, dict(uploads), report_every, max_steps, timeout,
                    interval, checkpoint)


_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _checkpoint(raw: Any) -> CheckpointPlan | None:
    if raw is None:
        return None
    w = "checkpoint."
    if not isinstance(raw, dict):
        raise _bad("checkpoint must be an object")
    unknown = sorted(set(raw) - {"every_s", "upload_url", "resume"})
    if unknown:
        raise _bad(f"unknown checkpoint field(s): {', '.join(unknown)}")
    every = _float(raw, "every_s", 0.0, 86400.0, where=w)
    upload = _http_url(raw.get("upload_url"), "checkpoint.upload_url")
    resume = raw.get("resume")
    if resume is not None:
        if not isinstance(resume, dict) or set(resume) != {"url", "step", "sha256"}:
            raise _bad("checkpoint.resume must be {url, step, sha256}")
        if not isinstance(resume["sha256"], str) or not _SHA256_RE.fullmatch(resume["sha256"]):
            raise _bad("checkpoint.resume.sha256 must be 64 lowercase hex digits")
        resume = Resume(_http_url(resume["url"], "checkpoint.resume.url"),
                        _int(resume, "step", 1, where="checkpoint.resume."), resume["sha256"])
    return CheckpointPlan(every, upload, resume)


# ---- event constructors (the only places event dicts are built) -------------------------------------------


def _r(x: float, nd: int = 6) -> float:
    # Rounded floats keep stream payloads small and stable; precision beyond this is noise for a dashboard.
    return float(round(float(x), nd))


def stage_event(stage: str, message: str, elapsed_s: float, **training_counts: int) -> dict:
    assert stage in STAGES, stage
    ev: dict[str, Any] = {"type": "stage", "stage": stage, "message": message, "elapsed_s": _r(elapsed_s, 3)}
    if stage == "training":
        ev["total_steps"] = int(training_counts["total_steps"])
        ev["train_examples"] = int(training_counts["train_examples"])
        ev["eval_examples"] = int(training_counts["eval_examples"])
        if training_counts.get("resumed_from_step"):
            ev["resumed_from_step"] = int(training_counts["resumed_from_step"])
    return ev


def metrics_event(*, step: int, total_steps: int, epoch: float, train_loss: float, learning_rate: float,
                  grad_norm: float, tokens_per_sec: float, gpu_util: float | None, elapsed_s: float,
                  gpu_memory_gb: float | None = None) -> dict:
    ev = {
        "type": "metrics", "step": int(step), "total_steps": int(total_steps), "epoch": _r(epoch, 4),
        "train_loss": _r(train_loss), "learning_rate": float(f"{learning_rate:.8g}"), "grad_norm": _r(grad_norm),
        "tokens_per_sec": _r(tokens_per_sec, 2), "gpu_util": None if gpu_util is None else _r(gpu_util, 1),
        "elapsed_s": _r(elapsed_s, 3),
    }
    if gpu_memory_gb is not None:
        ev["gpu_memory_gb"] = _r(gpu_memory_gb, 2)
    return ev


def checkpoint_event(*, step: int, size: int, sha256: str, elapsed_s: float) -> dict:
    """A checkpoint was uploaded: a retry (or a resumed lost run) may continue from `step`."""
    return {"type": "checkpoint", "step": int(step), "size": int(size), "sha256": sha256,
            "elapsed_s": _r(elapsed_s, 3)}


def eval_event(*, step: int, epoch: float, eval_loss: float, elapsed_s: float) -> dict:
    return {"type": "eval", "step": int(step), "epoch": _r(epoch, 4), "eval_loss": _r(eval_loss),
            "elapsed_s": _r(elapsed_s, 3)}


def succeeded_event(*, files: list[dict], final_train_loss: float, final_eval_loss: float | None,
                    total_steps: int, train_runtime_s: float, tokens_per_sec: float, train_tokens: int,
                    quantization_used: str, device: str, stopped_early: str | None = None,
                    samples: list[dict] | None = None) -> dict:
    event = {
        "type": "result", "status": "succeeded",
        "files": [{"name": f["name"], "size": int(f["size"]), "sha256": f["sha256"]} for f in files],
        "metrics": {
            "final_train_loss": _r(final_train_loss),
            "final_eval_loss": None if final_eval_loss is None else _r(final_eval_loss),
            "total_steps": int(total_steps), "train_runtime_s": _r(train_runtime_s, 3),
            "tokens_per_sec": _r(tokens_per_sec, 2), "train_tokens": int(train_tokens),
        },
        "quantization_used": quantization_used, "device": device,
    }
    if stopped_early:
        # The adapter trained so far was saved and uploaded, but the run did not finish its steps.
        event["stopped_early"] = stopped_early
    if samples:
        event["samples"] = [{k: str(sm[k]) for k in ("prompt", "reference", "base", "adapter")} for sm in samples]
    return event


def failed_event(err: WorkerError) -> dict:
    return {"type": "result", "status": "failed", "error_code": err.code, "message": err.message, "hint": err.hint}
