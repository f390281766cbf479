"""The shared file chores: a failed write never replaces a good file, modes follow the umask."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from madapter.fileio import _new_file_mode, atomic_open, atomic_path, file_digest, write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    write_json_atomic(target, {"ok": 1})
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write('{"half": ')
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_new_files_get_the_mode_open_would_give(tmp_path):
    """Not mkstemp's 0600: a serving container or another user must be able to read outputs."""
    umask = os.umask(0o027)
    _new_file_mode.cache_clear()  # the umask is read once per process
    try:
        with atomic_path(tmp_path / "sub" / "shard.npy") as tmp:
            tmp.write_bytes(b"x")
        (tmp_path / "plain").write_bytes(b"x")
    finally:
        os.umask(umask)
        _new_file_mode.cache_clear()
    mode = (tmp_path / "sub" / "shard.npy").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777 == 0o640


def test_digest_is_streamed_sha256_or_any_hashlib_name(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # more than one chunk, not a multiple of it
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
    assert file_digest(path, "md5") == hashlib.md5(data).hexdigest()
