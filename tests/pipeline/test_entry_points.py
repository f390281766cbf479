"""``madapter ...`` (the installed console script) and ``python -m madapter ...`` are one program.

Both must go through :func:`madapter.cli.main`, so an error ends the same way whichever a user
(or a DVC stage) types: same one ``error:`` line, same exit code, no traceback.  The console
script is the one pip installed into this virtualenv (``pip install -e .`` writes it from
``[project.scripts]``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from tests.common.processes import REPO, clean_env

CONSOLE_SCRIPT = Path(sys.executable).parent / "madapter"

STRAY_ERROR_HOOK = '''
import logging
from madapter.config import ConfigError

def _stray(*args, **kwargs):
    raise ConfigError("stray: raised outside any command")

logging.basicConfig = _stray  # the CLI's --log-level callback calls it before any command runs
'''
"""A ``sitecustomize`` that makes a ConfigError escape every command's own error handling."""


def _both(args: list[str], cwd: Path, pythonpath: Sequence[Path] = ()) -> list[subprocess.CompletedProcess]:
    """Run ``args`` through the console script and through ``python -m madapter``, in ``cwd``."""
    assert CONSOLE_SCRIPT.is_file(), f"{CONSOLE_SCRIPT} missing: run .venv/bin/python -m pip install --no-deps -e ."
    env = {**clean_env(), "PYTHONPATH": ":".join(str(p) for p in [*pythonpath, REPO])}
    return [
        subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        for cmd in ([str(CONSOLE_SCRIPT), *args], [sys.executable, "-m", "madapter", *args])
    ]


def _bad_params(tmp_path: Path) -> Path:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["train"]["epochs"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp_path


def test_console_script_calls_the_shared_entry_function():
    assert "from madapter.cli import main" in CONSOLE_SCRIPT.read_text(), "reinstall: .venv/bin/python -m pip install --no-deps -e ."


@pytest.mark.integration
@pytest.mark.parametrize(
    ("case", "args", "code", "said"),
    [
        ("bad-params", ["check-params"], 2, "train.epochs"),
        ("bad-params", ["train"], 2, "train.epochs"),
        ("missing-params", ["scan"], 2, "params.yaml: file not found"),
        ("stray-error", ["check-params"], 2, "error: stray: raised outside any command"),
    ],
    ids=["bad-params-check", "bad-params-stage", "missing-params", "stray-config-error"],
)
def test_console_script_and_python_m_end_an_error_the_same_way(tmp_path, case, args, code, said):
    hook = tmp_path / "hook"
    hook.mkdir()
    if case == "stray-error":
        (hook / "sitecustomize.py").write_text(STRAY_ERROR_HOOK)
    cwd = tmp_path / "work"
    cwd.mkdir()
    if case == "bad-params":
        _bad_params(cwd)
    script, module = _both(args, cwd, [hook])
    for proc in (script, module):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr and len(lines) == 1 and said in lines[0], lines
    assert script.stderr == module.stderr and script.stdout == module.stdout


@pytest.mark.integration
def test_console_script_and_python_m_agree_on_success(tmp_path):
    script, module = _both(["check-params", "--params", str(REPO / "params.yaml"), "-S", "train.epochs=3"], tmp_path)
    assert script.returncode == module.returncode == 0, script.stderr + module.stderr
    assert script.stdout == module.stdout and "epochs=3" in script.stdout
