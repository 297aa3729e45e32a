"""Local-executor entry point: runs the same handler as RunPod, as a subprocess.

    python harness.py --job-id <id>  < job.json

Reads one JSON object {"id": ..., "input": {...}} from stdin and writes every yielded event as one compact
JSON line to stdout (flushed per line). stdout carries nothing else: the real stdout fd is kept private and
fd 1 is pointed at stderr, so stray prints from libraries (Python or C) cannot corrupt the stream.
If the handler raises, a final {"__error__": {...}} line is written (the shape RunPod reports for FAILED
jobs) and the exit code is 1. SIGTERM (cancel) exits promptly with 143.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import traceback


def _private_stdout():
    # Duplicate fd 1 for our events, then make fd 1 (and sys.stdout) an alias of stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return out


def _on_sigterm(signum, frame):
    # SystemExit unwinds through the generator's finally blocks (temp dirs, GPU memory) on the way out.
    print("harness: SIGTERM received, stopping", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def _emit(out, obj) -> None:
    # allow_nan=False: NaN/Infinity are not JSON and would break the platform's parser.
    out.write(json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")
    out.flush()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job-id", required=True, help="the executor's job id (for logs)")
    args = parser.parse_args(argv)
    out = _private_stdout()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        job = json.loads(sys.stdin.read())
        if not isinstance(job, dict):
            raise ValueError("stdin must hold one JSON object {\"id\": ..., \"input\": {...}}")
        job.setdefault("id", args.job_id)
        import handler as handler_mod

        async def stream() -> None:
            gen = handler_mod.handler(job)
            if os.environ.get("LORA_WORKER_TEST_CRASH") == "1":
                gen = _crash_after_first(gen)  # test-only hook: exercises the __error__ path
            async for event in gen:
                _emit(out, event)

        asyncio.run(stream())
        return 0
    except Exception as e:  # noqa: BLE001 - any escape from the handler is reported as RunPod does
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        _emit(out, {"__error__": {"error_type": type(e).__name__, "error_message": str(e),
                                  "error_traceback": traceback.format_exc()}})
        return 1


async def _crash_after_first(gen):
    async for event in gen:
        yield event
        await gen.aclose()
        raise RuntimeError("LORA_WORKER_TEST_CRASH: simulated handler crash")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
