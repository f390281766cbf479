"""Getting one file onto disk, reliably: resumable HTTP, retries with backoff, checksums, atomic rename.

A file is downloaded into ``<name>.part`` and only renamed to ``<name>`` once it is complete and
its checksum matches, so a file with its final name is always a whole, verified file.  If the
connection drops, the next attempt (or the next run) sends ``Range: bytes=<have>-`` and appends;
a server that ignores ranges (``200`` instead of ``206``) makes us start that file over.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    """A file could not be fetched; what was already downloaded stays for the next run to resume."""


class ChecksumError(DownloadError):
    """A complete file whose digest differs from the expected one (it is deleted, never renamed)."""


class NotFoundError(DownloadError):
    """The server or directory does not have the file (HTTP 404 / missing path)."""


class _Incomplete(Exception):
    """The response ended before the announced length: retry and resume."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _finish(part: Path, dest: Path, expected_sha256: str | None, origin: str) -> str:
    """Verify ``part`` and atomically give it its final name; returns its sha256."""
    digest = sha256_of(part)
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
            raise _Incomplete(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise DownloadError(f"{url}: HTTP {resp.status_code} {resp.reason}; check dataset.source / credentials")
        if have and resp.status_code == 200:
            logger.warning("%s: server ignored the Range request; downloading the whole file again", url)
            have = 0
        elif have:
            start = resp.headers.get("Content-Range", "bytes 0-").split()[-1].split("-")[0]
            if start != str(have):
                raise DownloadError(f"{url}: server resumed at byte {start}, expected {have}; delete {part} and retry")
        length = resp.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else None
        mode = "ab" if have else "wb"
        with (
            open(part, mode) as fh,
            tqdm(total=expected, initial=have, unit="B", unit_scale=True, desc=part.name[:-5], leave=False) as bar,
        ):
            # We check the length ourselves: urllib3's own check would raise *and* drop the
            # bytes it had buffered, so a dropped connection would lose what already arrived.
            resp.raw.enforce_content_length = False
            while chunk := resp.raw.read1(_CHUNK, decode_content=False):
                fh.write(chunk)
                bar.update(len(chunk))
    if expected is not None and part.stat().st_size < expected:
        raise _Incomplete(f"got {part.stat().st_size} of {expected} bytes")


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
            except (
                _Incomplete,
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError,
            ) as err:
                if attempt == retries:
                    raise DownloadError(
                        f"{url}: failed after {retries + 1} attempts ({err}); re-run to resume from {part}"
                    ) from err
                wait = backoff_s * 2**attempt
                have = part.stat().st_size if part.exists() else 0
                logger.warning("%s: %s; retry %d/%d in %.1fs (resuming at byte %d)", url, err, attempt + 1, retries, wait, have)
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
    with open(src, "rb") as fin, open(part, "wb") as fout:
        shutil.copyfileobj(fin, fout, _CHUNK)
    return _finish(part, dest, sha256, str(src))
