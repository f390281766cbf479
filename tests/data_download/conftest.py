"""Fixtures for the download / extraction / index tests: a local HTTP server and params builders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from madapter.config import Params, params_from_dict
from tests.data_download.server import FileServer, ServerControl


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """What the fake dataset host serves."""
    path = tmp_path / "host"
    path.mkdir()
    return path


@pytest.fixture
def server(host_dir: Path) -> Iterator[ServerControl]:
    with FileServer(host_dir) as control:
        yield control


def make_params(tmp_path: Path, name: str, source: str | Path | None = None, **sections: dict) -> Params:
    """Params for dataset ``name`` with data under ``tmp_path/data``; fast retries for tests."""
    data: dict = {
        "base": {"data_dir": str(tmp_path / "data"), "outputs_dir": str(tmp_path / "outputs")},
        "dataset": {"name": name, "source": None if source is None else str(source)},
        "download": {"retries": 2, "backoff_s": 0.0, "timeout_s": 10.0},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return params_from_dict(data, "test params")
