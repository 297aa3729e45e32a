"""Cooperative stopping: a cancel (the platform, or RunPod cancelling the handler) or the job's deadline
sets a flag that the pipeline checks between stages, between examples and every micro-batch, so a stop
takes effect within seconds in every stage instead of after the stage (or the run) ends."""

from __future__ import annotations

import threading
import time

# Kept free before the execution timeout for saving and uploading the partial adapter.
DEADLINE_MARGIN_S = 120.0


class Cancelled(Exception):
    """The job was cancelled: stop now, deliver nothing more."""


class Control:
    def __init__(self, execution_timeout_s: float | None = None, margin_s: float = DEADLINE_MARGIN_S,
                 clock=time.monotonic):
        self._cancelled = threading.Event()
        self._clock = clock
        self.started = clock()
        # The run stops training at the deadline and still has `margin_s` to save and upload.
        self.deadline = None if execution_timeout_s is None else \
            self.started + max(execution_timeout_s - margin_s, execution_timeout_s * 0.5)

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raises Cancelled once cancelled (call between units of work)."""
        if self._cancelled.is_set():
            raise Cancelled()

    def past_deadline(self) -> bool:
        return self.deadline is not None and self._clock() >= self.deadline

    def expire(self) -> None:
        """Moves the deadline to now (tests, and a platform that shortens a run)."""
        self.deadline = self._clock()
