"""The file chores every stage shares: writing a file atomically, and a file's digest.

Why one module: a stage output that a crash leaves half-written is worse than none, because the
next run (or DVC) trusts it.  Every file the pipeline writes goes through :func:`atomic_path`
(or its text/JSON shortcuts): the bytes land in a hidden temporary sibling and are renamed over
the target only once complete, which POSIX makes atomic on one file system.  Digests are
streamed, so checking a multi-gigabyte archive or weights file never loads it into memory.

Error lines (the third shared chore) live in :mod:`madapter.errors`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

CSV_ENCODING: dict[str, str] = {"encoding": "utf-8", "errors": "surrogateescape", "newline": ""}
"""How every CSV of the pipeline is opened: paths may carry undecodable bytes (non-UTF-8 file
names), which ``surrogateescape`` round-trips; ``newline=""`` is what the csv module wants."""

_CHUNK = 1 << 20


@functools.cache
def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 minus the umask), read once per process.

    ``os.umask`` can only be read by setting it, so this is done once, not on every write.
    """
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error removed.

    For writers that want a file name (``np.save``, ``torch.save``, an encoder, ``shutil.copy``).
    The temporary name is unique, so two processes writing the same target never mix their bytes.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _new_file_mode())  # mkstemp makes 0600; outputs are read by other users/containers
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``open()`` for writing, but the file appears under ``path`` only once closed without error."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as fh:
        yield fh


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json_atomic(path: str | os.PathLike[str], data: Any, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (non-JSON values via ``str``), newline-terminated, atomically."""
    write_text_atomic(path, json.dumps(data, indent=indent, default=str) + "\n")


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, streamed in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
