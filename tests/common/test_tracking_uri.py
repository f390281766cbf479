"""The tracking URI handed to Ray workers must name the same store in every working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from madapter.config import params_from_dict
from madapter.tracking import resolve_tracking_uri


def _params(uri: str | None):
    return params_from_dict({"mlflow": {"tracking_uri": uri}, "base": {"outputs_dir": "out"}})


def test_relative_sqlite_uri_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(_params("sqlite:///runs/mlflow.db")) == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"


def test_relative_sqlite_uri_from_the_environment_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///m.db")
    assert resolve_tracking_uri(_params(None)) == f"sqlite:///{tmp_path / 'm.db'}"


@pytest.mark.parametrize("uri", ["sqlite:////abs/m.db", "http://127.0.0.1:5000", "postgresql://u@h/db"])
def test_other_uris_are_unchanged(uri: str) -> None:
    assert resolve_tracking_uri(_params(uri)) == uri
