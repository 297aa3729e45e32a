"""Shared fixtures: a local signed-URL stand-in (HTTP server), chat datasets, job builders, schema validators."""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

WORKER = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(WORKER))

CONTRACT = WORKER / "contract"


def _validator(name: str):
    from jsonschema import Draft202012Validator

    schema = json.loads((CONTRACT / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="session")
def event_validator():
    return _validator("event.schema.json")


@pytest.fixture(scope="session")
def input_validator():
    return _validator("input.schema.json")


@pytest.fixture(scope="session", autouse=True)
def worker_env(tmp_path_factory):
    """One demo-model cache per test session (built once), no retry sleeps, offline HF."""
    cache = tmp_path_factory.mktemp("lora-worker-cache")
    old = dict(os.environ)
    os.environ.update({
        "LORA_WORKER_CACHE": str(cache),
        "LORA_WORKER_RETRY_BACKOFF_S": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    })
    yield cache
    os.environ.clear()
    os.environ.update(old)


class FakeStore:
    """Serves GET objects and records PUT bodies; `fail[path]` is a list of status codes returned first
    ("cut": a GET whose connection drops halfway through the body)."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, bytes] = {}
        self.fail: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.base = ""

    def url(self, path: str) -> str:
        # Query string mimics a signature: the worker must keep it and never log it.
        return f"{self.base}{path}?sig=deadbeef&expires=9999999999"

    def _next_failure(self, path: str) -> int | None:
        with self.lock:
            codes = self.fail.get(path)
            return codes.pop(0) if codes else None


@pytest.fixture
def store():
    st = FakeStore()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep pytest output clean
            pass

        def _path(self):
            return urlsplit(self.path).path

        def do_GET(self):
            path = self._path()
            st.requests.append(("GET", path))
            code = st._next_failure(path)
            if code is None and path not in st.objects:
                code = 404
            if code == "cut":
                # The connection drops mid-body: the full length announced, half of it sent.
                body = st.objects[path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if code is not None:
                self.send_error(code)
                return
            body = st.objects[path]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            path = self._path()
            st.requests.append(("PUT", path))
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            code = st._next_failure(path)
            if code is not None:
                self.send_error(code)
                return
            with st.lock:
                st.uploads[path] = body
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    st.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield st
    server.shutdown()
    server.server_close()


def make_examples(n: int = 24) -> list[dict]:
    """Deterministic chat examples: system/user/assistant, every third one multi-turn."""
    topics = ["the sea", "a red apple", "simple code", "the weather", "a short story", "the city"]
    out = []
    for i in range(n):
        t = topics[i % len(topics)]
        msgs = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"Tell me about {t}, number {i}."},
                {"role": "assistant", "content": f"Here is a clear answer about {t}. It is item {i}."}]
        if i % 3 == 0:
            msgs += [{"role": "user", "content": "Can you say it in fewer words?"},
                     {"role": "assistant", "content": f"Yes: {t}."}]
        out.append({"messages": msgs})
    return out


def dataset_bytes(examples: list[dict]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in examples).encode()


UPLOAD_NAMES = ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "chat_template.jinja"]


@pytest.fixture
def make_job(store):
    """Builds a job against the store: dataset published at /ds.jsonl, uploads under /out/."""

    def build(**overrides) -> dict:
        store.objects.setdefault("/ds.jsonl", dataset_bytes(make_examples()))
        hp = {"learning_rate": 1e-3, "batch_size": 2, "gradient_accumulation_steps": 2, "epochs": 2, "rank": 4,
              "alpha": 8, "dropout": 0.0, "max_seq_len": 128, "warmup_ratio": 0.2, "quantization": "none",
              "eval_fraction": 0.2, "seed": 7}
        hp.update(overrides.pop("hyperparameters", {}))
        inp = {
            "contract_version": 1, "job_id": str(uuid.uuid4()), "base_model": "tiny-random-llama",
            "dataset_url": store.url("/ds.jsonl"), "hyperparameters": hp,
            "upload_urls": {n: store.url(f"/out/{n}") for n in UPLOAD_NAMES},
            "report_every_steps": 1, "max_steps": 6,
            # Every step reported (the tests count them); the throttle has its own test.
            "report_interval_s": 0,
        }
        inp.update(overrides)
        return {"id": "job-" + inp["job_id"][:8], "input": inp}

    return build


def run_handler(job: dict) -> list[dict]:
    import handler

    return handler.run_sync(job)
