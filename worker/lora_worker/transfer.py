"""HTTP transfer of the dataset (signed GET) and the artifacts (signed PUT), with bounded retries.

Plain urllib keeps the image free of extra dependencies. Only transient failures (5xx, 429, connection
errors, timeouts) are retried; a 4xx on a signed URL means expired/forged and will not get better.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

TIMEOUT_S = 60
ATTEMPTS = 4  # one try + 3 retries
CHUNK = 1 << 20


def _backoff_s(attempt: int) -> float:
    # Test knob: the suite injects 5xx and must not sleep for seconds.
    base = float(os.environ.get("LORA_WORKER_RETRY_BACKOFF_S", "1.0"))
    return base * (2 ** attempt)


def _redact(url: str) -> str:
    # Signed URLs carry credentials in the query string: never log or report them.
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}{p.path}"


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    # HTTPException covers a body cut short mid-stream (IncompleteRead).
    return isinstance(exc, (urllib.error.URLError, OSError, http.client.HTTPException))


class TransferError(Exception):
    pass


def _with_retries(what: str, url: str, fn):
    last: BaseException | None = None
    for attempt in range(ATTEMPTS):
        try:
            return fn()
        except (OSError, http.client.HTTPException) as exc:  # URLError and HTTPError are OSErrors
            # Anything else (a cancel, SIGTERM's SystemExit, a bug) is not a transfer failure: it goes on up.
            last = exc
            if not _transient(exc) or attempt == ATTEMPTS - 1:
                break
            delay = _backoff_s(attempt)
            log.warning("%s %s failed (%s); retrying in %.1fs", what, _redact(url), _describe(exc), delay)
            time.sleep(delay)
    raise TransferError(f"{what} {_redact(url)} failed: {_describe(last)}")


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"connection error: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def download(url: str, dest: Path, check=None) -> int:
    """Streams url to dest (never holding the whole dataset in memory); returns the byte count.
    `check` is called between chunks: a cancel raises there instead of after the whole file."""

    def once() -> int:
        req = urllib.request.Request(url, method="GET")
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp, open(dest, "wb") as out:
            # read1: whatever has arrived (up to a chunk), so a slow link still checks often.
            while chunk := resp.read1(CHUNK):
                out.write(chunk)
                if check is not None:
                    check()
            got = out.tell()
            # http.client ends a body cut short by a dropped connection quietly (no IncompleteRead when
            # read in chunks): half a dataset would parse as a broken last line, or train on half the data.
            announced = resp.headers.get("Content-Length")
            if announced is not None and announced.isdigit() and got != int(announced):
                raise http.client.IncompleteRead(b"", int(announced) - got)
            return got

    return _with_retries("download of", url, once)


def file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def upload(url: str, path: Path) -> None:
    """PUTs the file, streaming from disk with an explicit Content-Length (signed URLs reject chunked bodies)."""
    size = path.stat().st_size

    def once() -> None:
        with open(path, "rb") as body:  # reopened per attempt so a retry starts from byte 0
            req = urllib.request.Request(
                url, data=body, method="PUT",
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                resp.read()

    _with_retries("upload to", url, once)
