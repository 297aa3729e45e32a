"""RunPod Serverless entry point of the lora-pipeline GPU worker.

`handler` is an async generator: each yielded dict is one contract event (see contract/event.schema.json),
streamed through RunPod's /stream and, with return_aggregate_stream, also returned as the job's final output
list. The pipeline runs in a thread and hands its events over a queue, so the event loop stays free: when
RunPod cancels the job (or the platform's deadline passes) the pipeline's stop flag is set at once and
training stops at the next micro-batch, instead of running on, billed, until the stage or the run ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading

# Quiet progress bars and telemetry before transformers is imported: logs belong on stderr, and workers are offline.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lora_worker import hub  # noqa: E402

hub.configure_cache()  # before transformers is imported: it reads HF_HOME once

from lora_worker import pipeline  # noqa: E402
from lora_worker.control import Control  # noqa: E402

logging.basicConfig(level=os.environ.get("LORA_WORKER_LOG_LEVEL", "INFO"), stream=sys.stderr,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("handler")

# How long a stopped pipeline may take to notice its flag before the handler returns anyway.
STOP_GRACE_S = 30.0


async def handler(job, control: Control | None = None):
    """job = {"id": str, "input": {...}}; yields stage/metrics/eval events and exactly one result event."""
    control = control or pipeline.control_for(job)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def produce() -> None:
        try:
            for event in pipeline.run(job, control):
                loop.call_soon_threadsafe(queue.put_nowait, ("event", event))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            loop.call_soon_threadsafe(queue.put_nowait, ("error", e))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, ("done", None))

    thread = threading.Thread(target=produce, name="lora-pipeline", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "event":
                yield value
            elif kind == "error":
                raise value
            else:
                break
    finally:
        if thread.is_alive():
            # Cancelled by RunPod (or the consumer went away): stop the pipeline and let it clean up.
            log.warning("handler stopped before the pipeline ended: cancelling it")
            control.cancel()
            await asyncio.to_thread(thread.join, STOP_GRACE_S)


def run_sync(job) -> list[dict]:
    """Runs the handler to the end and returns its events (the local harness and tests)."""

    async def collect() -> list[dict]:
        return [event async for event in handler(job)]

    return asyncio.run(collect())


if __name__ == "__main__":
    import runpod

    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
