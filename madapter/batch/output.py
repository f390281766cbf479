"""The predictions table of ``batch-predict``: its format (by extension), its checks and its atomic writer.

One row per input video, in input order.  Columns: ``path``; ``true_label`` (``--split`` only,
the index's label); ``label_1, score_1, ... label_k, score_k`` (top-k, best first; empty for a
video that could not be read); ``error`` (empty when the video was scored, else one line saying
why not).  Flat columns rather than list columns, so the CSV and the Parquet file have the same
schema and a spreadsheet or ``pandas.read_csv`` reads them without parsing.

The file appears only once complete (:func:`madapter.fileio.atomic_path`): a job that fails or
is interrupted leaves the previous output, if any, intact.
"""

from __future__ import annotations

import os
from pathlib import Path

from madapter.config import ConfigError

FORMATS = {".parquet": "parquet", ".csv": "csv"}


def output_format(output: Path) -> str:
    """``parquet`` or ``csv`` from the output's extension; anything else is a one-line error."""
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--output {output}: unsupported extension {output.suffix or '(none)'!r}; "
                          "end the file name with .parquet or .csv")
    return fmt


def check_output(output: Path) -> str:
    """Before any work: the format, and a folder that exists (or can be made) and is writable."""
    fmt = output_format(output)
    if output.is_dir():
        raise ConfigError(f"--output {output}: is a directory; pass a file name ending in .parquet or .csv")
    folder = output.parent if str(output.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--output {output}: cannot create {folder} ({err.strerror or err}); "
                          "choose a folder you can write to") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {output}: {folder} is not writable; choose a folder you can write to")
    return fmt


def write_table(frame, output: Path) -> Path:
    """Write the predictions DataFrame to ``output`` (Parquet or CSV by extension), atomically."""
    from madapter.fileio import atomic_path

    fmt = output_format(output)
    with atomic_path(output) as tmp:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False, engine="pyarrow")
        else:
            frame.to_csv(tmp, index=False, encoding="utf-8")
    return output
