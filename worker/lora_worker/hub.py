"""Where Hugging Face downloads go, and how a gated model's failure reads.

Cold starts on RunPod are mostly the base model's download: with a network volume attached (mounted at
/runpod-volume) the Hugging Face cache lives there, so every worker after the first starts from a warm cache.
Gated models (Llama, Gemma, ...) need `HF_TOKEN` set on the endpoint; huggingface_hub reads it from the
environment."""

from __future__ import annotations

import os
from pathlib import Path

RUNPOD_VOLUME = Path("/runpod-volume")


def configure_cache(env: dict | None = None, volume: Path = RUNPOD_VOLUME) -> str | None:
    """Points HF_HOME at the network volume when one is mounted and the operator set none; returns it."""
    env = os.environ if env is None else env
    if env.get("HF_HOME"):
        return env["HF_HOME"]
    if volume.is_dir() and os.access(volume, os.W_OK):
        env["HF_HOME"] = str(volume / "huggingface")
        return env["HF_HOME"]
    return None


def load_failure_hint(exc: BaseException) -> str | None:
    """A hint for download failures the user can fix: gated or private models need a token."""
    text = f"{type(exc).__name__}: {exc}"
    if any(s in text for s in ("GatedRepoError", "gated repo", "401", "403", "Unauthorized")):
        return ("the model is gated or private: accept its licence on Hugging Face and set HF_TOKEN (a token "
                "with access to it) in the endpoint's environment")
    return None
