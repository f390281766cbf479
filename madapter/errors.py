"""Errors a stage expects, and how any error becomes the one line a user reads.

A stage that fails for a reason outside the code (a host that cannot be reached, a full disk,
a missing system tool, a Ray worker that could not start) raises :class:`StageError` with one
line that names the file or URL, what happened and what to do.  The CLI prints that line and
exits non-zero; ``--log-level DEBUG`` shows the traceback.
"""

from __future__ import annotations

import errno
import os
import sys


class StageError(RuntimeError):
    """An expected failure of a stage; ``str(err)`` is one line: what, where, and what to do."""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of an exception's message (its type name when there is none)."""
    text = str(err).strip()
    line = text.splitlines()[0].strip() if text else type(err).__name__
    if limit is not None and len(line) > limit:
        line = line[: limit - 3] + "..."
    return line


class MissingToolError(StageError):
    """A system program a stage needs is not installed (e.g. ``unar`` for RAR archives)."""


SETUP_HINT = "install it: scripts/setup-system.sh installs the system tools the pipeline uses"
"""What to do about a missing system tool."""

_DISK_HINTS: dict[int, str] = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
_FULL = (errno.ENOSPC, errno.EDQUOT)
_EXPECTED_ELSEWHERE = (
    ("madapter.data.video", "VideoError"),
    ("madapter.models.backbone", "WeightsError"),
    ("madapter.models.checkpoint", "CheckpointError"),
)
"""Expected failures defined in modules this one must not import (they pull in torch/decord):
an instance can only exist once its module is loaded, so ``sys.modules`` is enough to check."""


def disk_error_line(err: OSError, path: str | os.PathLike[str] | None = None) -> str | None:
    """One line for a full / read-only / forbidden disk (``None`` for any other OSError).

    Why a line of its own: the OSError of a failed ``write()`` carries no file name, so the
    caller passes the path it was writing; what to do differs between "full" and "not allowed".
    """
    what = _DISK_HINTS.get(err.errno or -1)
    if what is None:
        return None
    where = path if path is not None else err.filename
    todo = (
        "free some space there, or move base.data_dir / base.outputs_dir to a bigger disk, then re-run "
        "(finished files are kept)"
        if err.errno in _FULL
        else "fix its permissions, or set base.data_dir / base.outputs_dir to a directory you own"
    )
    return f"{where}: {what}; {todo}" if where else f"{what}; {todo}"


def _raised_by_subprocess(err: BaseException) -> bool:
    """Whether ``err`` came out of starting a program (``subprocess`` could not exec it)."""
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_execute_child" and "subprocess" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def missing_tool_line(err: BaseException) -> str | None:
    """One line for a program that could not be started because it is not installed."""
    if isinstance(err, FileNotFoundError) and _raised_by_subprocess(err):
        tool = os.path.basename(str(err.filename or "a required program"))
        return f"{tool}: not installed (not found on PATH); {SETUP_HINT}"
    return None


def _is_expected_elsewhere(err: BaseException) -> bool:
    for module, name in _EXPECTED_ELSEWHERE:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return True
    return False


def expected_failure_line(err: BaseException) -> str | None:
    """The one line a user reads for an *expected* failure; ``None`` for anything else (a bug).

    Expected: :class:`StageError` and the stage errors that predate it (bad video, weights or
    checkpoint), a full/read-only disk, a missing program.  A bug keeps its traceback.
    """
    if isinstance(err, StageError) or _is_expected_elsewhere(err):
        return first_line(err)
    if isinstance(err, OSError):
        return missing_tool_line(err) or disk_error_line(err)
    return None
