"""RunPod Serverless entry point of the lora-pipeline GPU worker.

`handler` is a generator: each yielded dict is one contract event (see contract/event.schema.json), streamed
through RunPod's /stream and, with return_aggregate_stream, also returned as the job's final output list.
"""

from __future__ import annotations

import logging
import os
import sys

# Quiet progress bars and telemetry before transformers is imported: logs belong on stderr, and workers are offline.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lora_worker import pipeline  # noqa: E402

logging.basicConfig(level=os.environ.get("LORA_WORKER_LOG_LEVEL", "INFO"), stream=sys.stderr,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def handler(job):
    """job = {"id": str, "input": {...}}; yields stage/metrics/eval events and exactly one result event."""
    yield from pipeline.run(job)


if __name__ == "__main__":
    import runpod

    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
