"""Cancel-latency benchmark (docs/PERFORMANCE.md): the time from a cancel (the stop flag RunPod's cancel or
the platform's deadline sets) to the pipeline's end, in each stage a job can be in — a slow dataset
download, tokenising a large dataset, and training the demo model. CPU only, seconds.

    ~/.cache/lora-pipeline/worker-venv/bin/python worker/bench/cancel.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LORA_WORKER_CACHE", str(Path(tempfile.gettempdir()) / "lora-worker-bench-cache"))

from lora_worker import data, pipeline  # noqa: E402
from lora_worker.control import Control  # noqa: E402


def dataset(n: int) -> bytes:
    lines = []
    for i in range(n):
        lines.append(json.dumps({"messages": [
            {"role": "user", "content": f"Question {i}: what is the capital of country number {i}?"},
            {"role": "assistant", "content": f"The capital of country {i} is city {i}, a fine place."}]}))
    return ("\n".join(lines) + "\n").encode()


class Server:
    """Serves /fast and /slow (64 kB/s) datasets and accepts uploads."""

    def __init__(self, body: bytes):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = 1 << 14
                for i in range(0, len(body), step):
                    try:
                        self.wfile.write(body[i:i + step])
                    except OSError:
                        return  # the worker stopped reading
                    if self.path.startswith("/slow"):
                        time.sleep(0.25)

            def do_PUT(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        outer.server = self.server


def job(base: str, path: str, epochs: int) -> dict:
    names = ["adapter_config.json", "adapter_model.safetensors"]
    return {"id": "bench", "input": {
        "contract_version": 1, "job_id": str(uuid.uuid4()), "base_model": "tiny-random-llama",
        "dataset_url": f"{base}{path}", "report_every_steps": 1, "report_interval_s": 0,
        "hyperparameters": {"learning_rate": 1e-3, "batch_size": 4, "gradient_accumulation_steps": 1,
                            "epochs": epochs, "rank": 4, "alpha": 8, "dropout": 0.0, "max_seq_len": 128,
                            "warmup_ratio": 0.0, "quantization": "none", "eval_fraction": 0.0, "seed": 1},
        "upload_urls": {n: f"{base}/out/{n}" for n in names}}}


def measure(stage: str, the_job: dict, ready, delay_s: float = 0.0) -> float:
    """Runs the pipeline in a thread and cancels `delay_s` after `ready(event)` says the stage is under
    way; returns the seconds from the cancel to the pipeline's end."""
    control = Control()
    cancelled_at: list[float] = []
    under_way = threading.Event()

    def run():
        for event in pipeline.run(the_job, control):
            if ready(event):
                under_way.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert under_way.wait(600), f"{stage}: never reached"
    time.sleep(delay_s)
    cancelled_at.append(time.monotonic())
    control.cancel()
    thread.join(600)
    assert not thread.is_alive(), f"{stage}: the pipeline did not stop"
    return time.monotonic() - cancelled_at[0]


def main() -> None:
    big = dataset(200_000)  # ~25 MB: seconds of tokenising
    server = Server(big)
    rows = []
    # Download: cancel one second into a 64 kB/s download.
    slow = job(server.base, "/slow", 1)
    rows.append(("downloading", measure("downloading", slow, lambda e: e.get("stage") == "downloading_dataset",
                                        delay_s=1.0)))
    # Tokenising: cancel after the first thousand examples are encoded.
    real = data.encode
    count = {"n": 0}
    flag = threading.Event()

    def counting(*args, **kwargs):
        count["n"] += 1
        if count["n"] == 1000:
            flag.set()
        return real(*args, **kwargs)

    data.encode = counting
    control = Control()
    cancelled_at: list[float] = []

    def watch():
        flag.wait(600)
        cancelled_at.append(time.monotonic())
        control.cancel()

    threading.Thread(target=watch, daemon=True).start()
    list(pipeline.run(job(server.base, "/fast", 1), control))
    rows.append(("tokenising", time.monotonic() - cancelled_at[0]))
    data.encode = real
    # Training: cancel at the fifth metrics event of a long demo run.
    small = Server(dataset(400))
    steps = {"n": 0}

    def fifth_step(event):
        steps["n"] += event["type"] == "metrics"
        return steps["n"] >= 5

    rows.append(("training", measure("training", job(small.base, "/fast", 1000), fifth_step)))
    for stage, seconds in rows:
        print(f"cancel while {stage:12s}: stopped {seconds * 1000:8.1f} ms after the flag was set")


if __name__ == "__main__":
    main()
