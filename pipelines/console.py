"""What a running stage shows on the terminal, and where the rest of its output goes.

A DVC stage prints a lot that nobody reads while it runs: DVC's own lines, every INFO line of the
libraries it uses, Ray's start-up.  :class:`StageOutput` sends EVERY line to the stage's log file
(``outputs/logs/<stage>.log``, :func:`stage_log_path`) and to the full log (the Prefect task run's
logs, API only, so the Prefect UI shows everything), and lets a few reach the terminal
(:func:`console_line`):

* one line when the stage starts and one when it ends, with its duration and its one-line result
  (the ``stage <name>: done in ...: <summary>`` line of :mod:`madapter.cli`);
* the training epochs (at most ~20 per run: :func:`madapter.stage_summary.epoch_is_logged`) and
  a resumed run's "resuming run ..." line;
* warnings and errors.

On a terminal a status line, redrawn in place, shows the running stage's elapsed time and latest
output (:class:`StatusLine`); on a pipe (CI, ``| tee``) there is none, so a captured run holds only
the lines above.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import time
from collections import deque
from pathlib import Path
from typing import TextIO

import yaml

Log = logging.Logger | logging.LoggerAdapter

MAX_LINE = 220
"""A message for the terminal longer than this is cut (the log file keeps it whole): with the logging
prefix (time, level, Prefect task run) the terminal line stays under 300 characters."""

DONE = re.compile(r"\bstage (?P<stage>[\w-]+): done in [\d.]+s: (?P<summary>.*)$")
"""The last line of ``python -m madapter <stage>`` (:mod:`madapter.cli`): its one-line result."""
_EPOCH = re.compile(r"\b(epoch \d+/\d+: (?:train|val|lr) .*)$")
"""An epoch's line (:func:`madapter.stage_summary.epoch_line`), not a progress bar's ``epoch 3/60:  7%|``."""
_RESUMING = re.compile(r"\b(resuming (?:run|Ray run) .*)$")
_PROBLEM = re.compile(
    r"(^|[\s|:\]])(WARNING|WARN|ERROR|CRITICAL|FATAL)([\s:|]|$)"  # a logging level, DVC's "ERROR:"
    r"|^error: "  # a madapter command's one-line failure
    r"|\b[A-Z]\w*Warning: "  # Python's warnings module
    r"|^[\w.]*(Error|Exception): "  # the last line of a traceback
)
_LOG_PREFIX = re.compile(r"^(\([^)]*\) )?(\d{4}-\d\d-\d\d )?[\d:,.]+ (INFO|DEBUG) [\w.]+: ")
"""``(RayTrainWorker pid=12) 02:11:12 INFO madapter.train.loop: ``: cut from a line shown as it is."""
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
"""A terminal colour code (MLflow colours its warnings): the terminal handler adds its own."""


def console_line(line: str) -> tuple[int, str] | None:
    """(level, text) when a stage's output ``line`` belongs on the terminal, else None (log file only).

    The ``done`` line is not shown as it is: :class:`StageOutput` puts its summary in the stage's
    end line.
    """
    if DONE.search(line):
        return None
    if _PROBLEM.search(line):
        return logging.WARNING, _cut(line)
    for pattern in (_EPOCH, _RESUMING):
        if match := pattern.search(line):
            return logging.INFO, _cut(match.group(1))
    return None


def _cut(text: str, limit: int = MAX_LINE) -> str:
    text = _LOG_PREFIX.sub("", _ANSI.sub("", text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def stage_log_path(repo: Path, stage: str) -> Path:
    """``<base.outputs_dir>/logs/<stage>.log`` of ``repo`` (``outputs/logs/``; no stage declares it, so
    writing it never changes a stage's hash).  Read from ``params.yaml`` as plain YAML: the file
    must be known even when the params are invalid (the run fails with the params' own message)."""
    outputs = "outputs"
    try:
        base = (yaml.safe_load((repo / "params.yaml").read_text()) or {}).get("base") or {}
        outputs = str(base.get("outputs_dir") or outputs)
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    root = Path(outputs) if Path(outputs).is_absolute() else repo / outputs
    return root / "logs" / f"{stage}.log"


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter on the terminal)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class StatusLine:
    """One line at the bottom of a terminal, redrawn in place; nothing at all when ``stream`` is not a
    terminal (a pipe or a file gets only the lines that are logged)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream)
        self.drawn = False

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        width = max(20, shutil.get_terminal_size().columns - 1)
        text = " ".join(text.split())  # one physical line: no tabs, no carriage returns
        self.stream.write("\r\033[K" + (text if len(text) <= width else text[: width - 1] + "…"))
        self.stream.flush()
        self.drawn = True

    def stop(self) -> None:
        """Erase it for good: what follows is logged lines only (a stage being stopped)."""
        self.clear()
        self.enabled = False

    def clear(self) -> None:
        """Erase the status line, before a logged line is printed in its place."""
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.drawn = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class StageOutput:
    """The output of one stage run: every line to the log file and ``full``; the chosen ones to ``console``.

    ``console`` is the logger whose lines reach the terminal (in a Prefect task, the run logger: the
    terminal and the task run's logs); ``full`` gets the other lines (a Prefect logger that writes
    to the API only), so the task run's logs hold every line once.
    """

    def __init__(self, stage: str, console: Log, full: Log | None = None, log_file: Path | None = None,
                 status: StatusLine | None = None) -> None:
        self.stage = stage
        self.console = console
        self.full = full
        self.log_file = log_file
        self.status = status if status is not None else StatusLine()
        self.tail: deque[str] = deque(maxlen=40)
        """The last lines (for a failure's message)."""
        self.summary: str | None = None
        """The stage's one-line result, from its ``done`` line."""
        self.started = time.monotonic()
        self._file: TextIO | None = None

    def __enter__(self) -> StageOutput:
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.log_file.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.status.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def begin(self, command: str) -> None:
        """The stage's first terminal line (and a header in its log file, which keeps earlier runs)."""
        self._write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} {command}")
        where = f" (full log: {shown_path(self.log_file)})" if self.log_file is not None else ""
        self._emit(logging.INFO, f"{self.stage}: started{where}")

    def line(self, raw: str) -> None:
        """One line the stage printed."""
        text = raw.rstrip()
        if not text.strip():
            return
        self.tail.append(text)
        self._write(text)
        if done := DONE.search(text):
            self.summary = done.group("summary")
        chosen = console_line(text)
        if chosen is not None:
            level, shown = chosen
            self._emit(level, _cut(f"{self.stage}: {shown}"))
        elif self.full is not None:
            self.full.info("%s", text)
        self.status.show(f"{self.stage} {self.elapsed():.0f}s: {_LOG_PREFIX.sub('', _ANSI.sub('', text))}")

    def end(self, ran: bool) -> float:
        """The stage's last terminal line: how long, and its result (or that DVC found it up to date)."""
        seconds = self.elapsed()
        if not ran:
            text = f"{self.stage}: up to date, skipped by DVC ({seconds:.1f}s)"
        else:
            text = f"{self.stage}: done in {seconds:.1f}s" + (f": {self.summary}" if self.summary else "")
        self._write(f"===== {text}")
        self._emit(logging.INFO, _cut(text))
        return seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _emit(self, level: int, text: str) -> None:
        self.status.clear()
        self.console.log(level, "%s", text)

    def _write(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text + "\n")
            self._file.flush()
