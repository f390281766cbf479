"""The fetcher of the real material fails in one line that says what to do, and never half-writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.real_material import MaterialError, _fetched, debian_mirror, sha256


def test_mirror_is_read_from_the_machines_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\nComponents: main\n")
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_no_mirror_is_one_line_naming_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(MaterialError) as err:
        debian_mirror(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "MADAPTER_REAL_MATERIAL" in message and "pytorch-vision_0.14.1.orig.tar.gz" in message


def test_a_file_with_the_wrong_digest_is_removed_and_named(tmp_path: Path) -> None:
    wrong = tmp_path / "pytorch-vision_0.14.1.orig.tar.gz"
    wrong.write_bytes(b"not the tarball")
    with pytest.raises(MaterialError, match="sha256 differs") as err:
        _fetched(wrong, "0" * 64, "apt-get source pytorch-vision", "")
    assert not wrong.exists() and "\n" not in str(err.value)
    with pytest.raises(MaterialError, match="did not fetch .*: E: Failed to fetch"):
        _fetched(wrong, "0" * 64, "apt-get source pytorch-vision", "W: unsandboxed\nE: Failed to fetch x 404\n")


def test_the_file_decides_not_the_exit_code(tmp_path: Path) -> None:
    good = tmp_path / "file"
    good.write_bytes(b"bytes")
    assert _fetched(good, sha256(good), "apt-get source", "E: Failed to fetch the debian.tar.xz") == good
