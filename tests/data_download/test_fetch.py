"""One file over HTTP: retries with backoff, resume, servers that ignore Range, atomic final name."""

from __future__ import annotations

import hashlib
import os

import pytest

from madapter.data.acquire.fetch import ChecksumError, DownloadError, NotFoundError, copy_local, fetch_url

PAYLOAD = os.urandom(300_000)


@pytest.fixture
def blob(host_dir):
    (host_dir / "blob.bin").write_bytes(PAYLOAD)
    return hashlib.sha256(PAYLOAD).hexdigest()


def test_dropped_connection_is_retried_and_resumed(tmp_path, server, blob):
    server.drop_after["blob.bin"] = 100_000
    digest = fetch_url(f"{server.base_url}/blob.bin", tmp_path / "blob.bin", sha256=blob, retries=2, backoff_s=0)
    assert digest == blob and (tmp_path / "blob.bin").read_bytes() == PAYLOAD
    first, second = server.requests_for("blob.bin")
    assert (first.range, first.sent) == (None, 100_000)
    assert (second.range, second.status, second.sent) == ("bytes=100000-", 206, 200_000)
    assert not (tmp_path / "blob.bin.part").exists()


def test_server_ignoring_range_restarts_the_file(tmp_path, server, blob):
    server.ignore_range = True
    server.drop_after["blob.bin"] = 50_000
    fetch_url(f"{server.base_url}/blob.bin", tmp_path / "blob.bin", sha256=blob, retries=1, backoff_s=0)
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD
    assert [r.status for r in server.requests_for("blob.bin")] == [200, 200]


def test_transient_503_is_retried_with_backoff(tmp_path, server, blob, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr("madapter.data.acquire.fetch.time.sleep", waits.append)
    server.fail_503["blob.bin"] = 2
    fetch_url(f"{server.base_url}/blob.bin", tmp_path / "b", sha256=blob, retries=3, backoff_s=0.5)
    assert waits == [0.5, 1.0], "exponential backoff"
    assert [r.status for r in server.requests_for("blob.bin")] == [503, 503, 200]


def test_gives_up_after_retries_and_keeps_the_partial_file(tmp_path, server, blob):
    server.fail_503["blob.bin"] = 10
    with pytest.raises(DownloadError, match=r"blob.bin: HTTP 503 .*\(failed after 3 attempts\); .*dataset.source"):
        fetch_url(f"{server.base_url}/blob.bin", tmp_path / "b", retries=2, backoff_s=0)
    assert not (tmp_path / "b").exists()


def test_complete_part_file_from_an_earlier_run_is_not_fetched_again(tmp_path, server, blob):
    (tmp_path / "b.part").write_bytes(PAYLOAD)
    assert fetch_url(f"{server.base_url}/blob.bin", tmp_path / "b", sha256=blob, backoff_s=0) == blob
    assert [r.status for r in server.requests_for("blob.bin")] == [416]


def test_checksum_mismatch_leaves_no_file(tmp_path, server, blob):
    with pytest.raises(ChecksumError, match="does not match the expected"):
        fetch_url(f"{server.base_url}/blob.bin", tmp_path / "b", sha256="f" * 64, backoff_s=0)
    assert list(tmp_path.glob("b*")) == []


def test_missing_file_is_a_one_line_error(tmp_path, server):
    with pytest.raises(NotFoundError, match=r"nope.bin: not found \(HTTP 404\)"):
        fetch_url(f"{server.base_url}/nope.bin", tmp_path / "n", backoff_s=0)


def test_copy_local_verifies(tmp_path, host_dir, blob):
    assert copy_local(host_dir / "blob.bin", tmp_path / "c", blob) == blob
    with pytest.raises(ChecksumError):
        copy_local(host_dir / "blob.bin", tmp_path / "d", "0" * 64)
    with pytest.raises(NotFoundError, match="fix dataset.source"):
        copy_local(host_dir / "missing.bin", tmp_path / "e")
