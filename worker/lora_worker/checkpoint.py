"""Training checkpoints: everything a run needs to continue exactly where it was — the adapter's trainable
weights, the optimizer and scheduler, every random state, the position in the seeded data order and the
counters — in one file uploaded to a signed URL. A retry, or a run lost with its backend, resumes from it
and recomputes at most one checkpoint interval instead of the whole run.

The file is read back with `torch.load(weights_only=True)`: tensors and plain values only, never pickled
code, even though its sha256 is checked against the platform's record first.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass(frozen=True)
class Position:
    """Where training stands: `micro` is the next micro-batch of `epoch`'s order; `step` optimizer steps done."""
    epoch: int
    micro: int
    step: int


@dataclass
class Counters:
    """What the summary and the next evaluation need from the run before the checkpoint."""
    train_tokens: int = 0
    train_runtime_s: float = 0.0
    last_loss: float = float("nan")
    last_eval: float | None = None
    last_eval_step: int = -1


@dataclass
class Restored:
    position: Position
    counters: Counters
    # State of the data-order RNG at the start of `position.epoch` (that epoch's order is drawn again).
    order_rng_state: tuple


class Unusable(Exception):
    """The checkpoint cannot continue this run (another configuration, a corrupt file): start over."""


def fingerprint(base_model: str, hp, n_train: int, n_eval: int, total_steps: int) -> dict:
    """What must match for a checkpoint to continue a run: the same model, configuration and data."""
    return {"format": FORMAT, "base_model": base_model, "hyperparameters": asdict(hp), "n_train": n_train,
            "n_eval": n_eval, "total_steps": total_steps}


def trainable_state(model) -> dict:
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def save(path: Path, *, fingerprint: dict, model, optimizer, scheduler, order_rng_state: tuple,
         position: Position, counters: Counters) -> None:
    import torch

    rng = {"python": random.getstate(), "torch": torch.get_rng_state(), "order": order_rng_state}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({
        "fingerprint": fingerprint,
        "adapter": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "position": asdict(position),
        "counters": asdict(counters),
    }, path)


def read(path: Path, expected: dict) -> dict:
    """Loads a checkpoint file and checks it belongs to this run; raises Unusable otherwise."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file means: start over
        raise Unusable(f"the checkpoint file cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("fingerprint") != expected:
        got = state.get("fingerprint") if isinstance(state, dict) else None
        diff = sorted(k for k in expected if not isinstance(got, dict) or got.get(k) != expected[k])
        raise Unusable(f"the checkpoint belongs to another configuration (differs in: {', '.join(diff)})")
    return state


def restore(state: dict, model, optimizer, scheduler) -> Restored:
    """Puts a checkpoint's state into a freshly built model, optimizer and scheduler, and the RNGs."""
    import torch

    params = dict(model.named_parameters())
    adapter = state["adapter"]
    trainable = {n for n, p in params.items() if p.requires_grad}
    if set(adapter) != trainable:
        raise Unusable("the checkpoint's adapter tensors do not match this model's trainable parameters")
    with torch.no_grad():
        for name, tensor in adapter.items():
            if params[name].shape != tensor.shape:
                raise Unusable(f"{name} has shape {tuple(tensor.shape)} in the checkpoint, "
                               f"{tuple(params[name].shape)} in the model")
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    random.setstate(_tuples(rng["python"]))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return Restored(Position(**state["position"]), Counters(**state["counters"]), _tuples(rng["order"]))


def _tuples(value):
    # random.setstate wants the nested tuples it gave; a serialiser may hand back lists.
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value
