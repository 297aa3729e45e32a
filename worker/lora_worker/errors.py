"""Expected failures, each mapped to one contract error code plus a hint for the user.

The handler turns a WorkerError into a `result/failed` event instead of raising, so the platform
always gets a typed outcome; only genuine bugs escape as exceptions (the harness reports those).
"""

from __future__ import annotations

ERROR_CODES = (
    "invalid_input",
    "dataset_download_failed",
    "dataset_invalid",
    "dataset_incompatible",
    "model_load_failed",
    "no_gpu",
    "out_of_memory",
    "nan_loss",
    "upload_failed",
    "internal",
)

# Default hints, phrased as the next thing the user should do.
HINTS = {
    "invalid_input": "fix the job parameters and submit it again",
    "dataset_download_failed": "the signed URL may have expired; retry the job",
    "dataset_invalid": "check that the dataset is OpenAI chat JSONL with at least one assistant message "
    "per example, and that max_seq_len leaves room for the assistant replies",
    "dataset_incompatible": "the base model's chat template cannot render this dataset: fix the dataset or pick "
    "another base model",
    "model_load_failed": "check the base model id or path, that it is a causal LM, and that the worker can reach it",
    "no_gpu": "this worker sees no CUDA GPU: restrict the endpoint to GPU workers whose CUDA version the image "
    "supports (see the worker README), or train the demo model, which runs on CPU",
    "out_of_memory": "reduce batch_size or max_seq_len, or pick a GPU with more memory",
    "nan_loss": "lower the learning_rate (and check the data for empty or degenerate examples)",
    "upload_failed": "the signed upload URLs may have expired; retry the job",
    "internal": "retry the job; if it fails again, report it with the job id",
}


class WorkerError(Exception):
    """An expected, user-reportable failure."""

    def __init__(self, code: str, message: str, hint: str | None = None):
        if code not in ERROR_CODES:  # a typo here would break the contract; fail loudly in tests
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint or HINTS[code]


def is_oom(exc: BaseException) -> bool:
    """True for CUDA OOM; older/other backends raise a bare RuntimeError with this text."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except Exception:  # torch missing or broken: fall back to the message check
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
