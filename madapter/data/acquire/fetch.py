"""Getting one file onto disk, reliably: resumable HTTP, retries with backoff, checksums, atomic rename.

A file is downloaded into ``<name>.part`` and only renamed to ``<name>`` once it is complete and
its checksum matches, so a file with its final name is always a whole, verified file.  If the
connection drops, the next attempt (or the next run) sends ``Range: bytes=<have>-`` and appends;
a server that ignores ranges (``200`` instead of ``206``) makes us start that file over.  (Hence
not :func:`madapter.fileio.atomic_path`: the ``.part`` name is fixed on purpose, so the next
attempt finds it.  Digests come from :func:`madapter.fileio.file_digest`.)
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

from madapter.errors import StageError, disk_error_line, first_line
from madapter.fileio import file_digest

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(StageError):
    """A file could not be fetched; what was already downloaded stays for the next run to resume.

    A :class:`StageError`: the message is one line naming the URL or path and what to do, and the
    CLI prints just that line (the traceback only with ``--log-level DEBUG``).
    """


class ChecksumError(DownloadError):
    """A complete file whose digest differs from the expected one (it is deleted, never renamed)."""


class NotFoundError(DownloadError):
    """The server or directory does not have the file (HTTP 404 / missing path)."""


class _Incomplete(Exception):
    """The response ended before the announced length (or a retryable status): retry and resume."""


_NETWORK_ERRORS = (
    _Incomplete,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
)
"""Failures worth another attempt: the network, not the request, was the problem."""
_NO_FIX_HINT = "check the network, or set dataset.source to a mirror or a local copy"


def _causes(err: BaseException) -> list[BaseException]:
    """``err`` and what it wraps (requests -> urllib3 -> socket), outermost first."""
    chain: list[BaseException] = []
    node: BaseException | None = err
    while node is not None and node not in chain:
        chain.append(node)
        wrapped = getattr(node, "reason", None)  # urllib3's MaxRetryError keeps the cause here
        if not isinstance(wrapped, BaseException) and node.args and isinstance(node.args[0], BaseException):
            wrapped = node.args[0]  # requests wraps urllib3's error as its first argument
        node = node.__cause__ or (wrapped if isinstance(wrapped, BaseException) else None) or node.__context__
    return chain


def network_reason(err: BaseException) -> str:
    """A few words for why a request failed (requests' own message runs to ~300 characters)."""
    chain = _causes(err)
    for cause in reversed(chain):  # the innermost cause is the most specific
        if isinstance(cause, socket.gaierror):
            return "cannot resolve the host name (offline, or a wrong host in the URL?)"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the server"
        if isinstance(cause, (TimeoutError, socket.timeout, requests.Timeout, urllib3.exceptions.TimeoutError)):
            return "timed out (download.timeout_s)"
        if isinstance(cause, requests.exceptions.SSLError):
            return "TLS/SSL error"
        if isinstance(cause, _Incomplete):
            return str(cause)
        if isinstance(cause, (urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError)):
            return "connection dropped mid-transfer"
    return first_line(err, 120)


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _finish(part: Path, dest: Path, expected_sha256: str | None, origin: str) -> str:
    """Verify ``part`` and atomically give it its final name; returns its sha256."""
    digest = file_digest(part)
    if expected_sha256 and digest != expected_sha256.lower():
        part.unlink()
        raise ChecksumError(
            f"{origin}: sha256 {digest} does not match the expected {expected_sha256} "
            f"(corrupt download or wrong mirror file); deleted it, re-run to download again"
        )
    os.replace(part, dest)
    return digest


def _stream_once(session: requests.Session, url: str, part: Path, timeout_s: float) -> None:
    """One HTTP attempt: resume ``part`` if it exists; raise on anything short of a complete file."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout_s) as resp:
        if resp.status_code == 416 and have:
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == have:
                return  # the .part file was already complete
            logger.warning("%s: server refused to resume at byte %d; starting over", url, have)
            part.unlink()
            raise _Incomplete("range not satisfiable")
        if resp.status_code == 404:
            raise NotFoundError(f"{url}: not found (HTTP 404); check dataset.source or the URL in sources.py")
        if resp.status_code in _RETRYABLE_STATUS:
            raise _Incomplete(f"HTTP {resp.status_code} {resp.reason}".strip())
        if resp.status_code >= 400:
            raise DownloadError(
                f"{url}: HTTP {resp.status_code} {resp.reason}; check dataset.source (a mirror or a local copy) "
                f"or the credentials the host wants"
            )
        if have and resp.status_code == 200:
            logger.warning("%s: server ignored the Range request; downloading the whole file again", url)
            have = 0
        elif have:
            start = resp.headers.get("Content-Range", "bytes 0-").split()[-1].split("-")[0]
            if start != str(have):
                raise DownloadError(f"{url}: server resumed at byte {start}, expected {have}; delete {part} and retry")
        length = resp.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else None
        _write_body(resp, part, have, expected)
    if expected is not None and part.stat().st_size < expected:
        raise _Incomplete(f"got {part.stat().st_size} of {expected} bytes")


def _write_body(resp: requests.Response, part: Path, have: int, expected: int | None) -> None:
    """Append (or write) the response body to ``part``; a full or read-only disk is one line naming it."""
    try:
        with (
            open(part, "ab" if have else "wb") as fh,
            tqdm(total=expected, initial=have, unit="B", unit_scale=True, desc=part.name[:-5], leave=False, disable=None) as bar,
        ):
            # We check the length ourselves: urllib3's own check would raise *and* drop the
            # bytes it had buffered, so a dropped connection would lose what already arrived.
            resp.raw.enforce_content_length = False
            while chunk := resp.raw.read1(_CHUNK, decode_content=False):
                fh.write(chunk)
                bar.update(len(chunk))
    except OSError as err:
        line = None if isinstance(err, requests.RequestException) else disk_error_line(err, part)
        if line is None:
            raise
        raise DownloadError(line) from err


def _give_up(url: str, part: Path, attempts: int, err: BaseException) -> DownloadError:
    """The one-line error after the last attempt: URL, why, what to do; the ``.part`` file stays."""
    have = part.stat().st_size if part.exists() else 0
    resume = f"; re-run to resume from {part} ({have} bytes kept)" if have else ", then re-run"
    return DownloadError(f"{url}: {network_reason(err)} (failed after {attempts} attempts); {_NO_FIX_HINT}{resume}")


def fetch_url(
    url: str,
    dest: Path,
    sha256: str | None = None,
    retries: int = 4,
    timeout_s: float = 60.0,
    backoff_s: float = 1.0,
    session: requests.Session | None = None,
) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify, rename; returns the sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    own_session = session is None
    session = session or requests.Session()
    try:
        for attempt in range(retries + 1):
            try:
                _stream_once(session, url, part, timeout_s)
                break
            except _NETWORK_ERRORS as err:
                if attempt == retries:
                    raise _give_up(url, part, retries + 1, err) from err
                wait = backoff_s * 2**attempt
                have = part.stat().st_size if part.exists() else 0
                resuming = f" (resuming at byte {have})" if have else ""
                logger.warning(
                    "%s: %s; retry %d/%d in %.1fs%s", url, network_reason(err), attempt + 1, retries, wait, resuming
                )
                time.sleep(wait)
    finally:
        if own_session:
            session.close()
    return _finish(part, dest, sha256, url)


def copy_local(src: Path, dest: Path, sha256: str | None = None) -> str:
    """Copy a file the user already has (``dataset.source`` = a directory) with the same guarantees."""
    if not src.is_file():
        raise NotFoundError(f"{src}: not found; put the file there or fix dataset.source")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    try:
        with open(src, "rb") as fin, open(part, "wb") as fout:
            shutil.copyfileobj(fin, fout, _CHUNK)
    except OSError as err:  # a write error has no file name: then it was the copy we were writing
        line = disk_error_line(err, err.filename or part)
        if line is None:
            raise
        raise DownloadError(line) from err
    return _finish(part, dest, sha256, str(src))
