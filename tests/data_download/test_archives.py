"""Safe extraction: tricky names work, macOS litter is skipped, malicious archives write nothing."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from madapter.data.acquire.archives import ArchiveError, UnsafeArchiveError, extract_archive, rar_backend
from tests.data_download.layouts import tar_gz_bytes, zip_bytes
from tests.data_download.rarwriter import rar_bytes, write_rar

TRICKY = {
    "top dir/a b (1)!.avi": b"one",
    "top dir/-leading dash.avi": b"two",
    "top dir/ünïcödé/çlip #3.avi": b"three",
    "top dir/sub/../sub2/ok.txt".replace("sub/../", ""): b"four",
}
LITTER = {"__MACOSX/top dir/._a b (1)!.avi": b"rsrc", "top dir/._junk": b"x", "top dir/.DS_Store": b"x"}


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _write(path: Path, kind: str, entries: dict[str, bytes]) -> Path:
    if kind == "zip":
        path.write_bytes(zip_bytes(entries))
    elif kind == "tar.gz":
        path.write_bytes(tar_gz_bytes(entries))
    else:
        write_rar(path, dict(entries))
    return path


@pytest.mark.parametrize("kind", ["zip", "tar.gz", "rar"])
def test_tricky_names_extract_and_litter_is_skipped(tmp_path, kind):
    archive = _write(tmp_path / f"data.{kind}", kind, {**TRICKY, **LITTER})
    dest = tmp_path / "out"
    written = extract_archive(archive, dest)
    assert {p.relative_to(dest).as_posix() for p in written} == set(TRICKY)
    for name, data in TRICKY.items():
        assert (dest / name).read_bytes() == data
    assert not any(".extracting-" in p for p in _snapshot(dest)), "staging dir is cleaned up"


def test_archive_type_comes_from_content_not_name(tmp_path):
    archive = tmp_path / "download.bin"
    archive.write_bytes(tar_gz_bytes({"x.txt": b"x"}))
    assert [p.name for p in extract_archive(archive, tmp_path / "out")] == ["x.txt"]


def test_nested_rar_of_rars(tmp_path):
    inner = {f"{c}.rar": rar_bytes({c: None, f"{c}/(Rad)Schlag_die_Bank!_{c}.avi": c.encode()}) for c in ("a", "b")}
    archive = write_rar(tmp_path / "outer.rar", inner)
    written = extract_archive(archive, tmp_path / "out", nested=True)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "a/(Rad)Schlag_die_Bank!_a.avi",
        "b/(Rad)Schlag_die_Bank!_b.avi",
    ]
    assert not list((tmp_path / "out").glob("*.rar"))


@pytest.mark.integration
def test_rar_backend_for_compressed_entries_is_installed():
    # real UCF101/HMDB51 rars are compressed: rarfile needs unar/bsdtar (scripts/setup-system.sh)
    assert rar_backend() in {"unrar", "unar", "bsdtar", "7z", "7zz"}


def test_corrupt_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(zip_bytes({"a.txt": b"a" * 1000})[:60])
    with pytest.raises(ArchiveError, match="broken.zip"):
        extract_archive(bad, tmp_path / "out")
    plain = tmp_path / "notes.txt"
    plain.write_text("hello")
    with pytest.raises(ArchiveError, match="not a zip, tar or rar"):
        extract_archive(plain, tmp_path / "out")


def test_leftovers_of_an_interrupted_extraction_are_replaced(tmp_path):
    archive = _write(tmp_path / "a.zip", "zip", {"x/y.txt": b"y"})
    stale = tmp_path / "out" / ".extracting-a.zip" / "half-written.bin"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"junk")
    extract_archive(archive, tmp_path / "out")
    assert _snapshot(tmp_path / "out") == {"x", "x/y.txt"}


# --------------------------------------------------------------------------- malicious archives


def _zip_with_symlink(name: str, target: str, then: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
        for n, d in (then or {}).items():
            zf.writestr(n, d)
    return buf.getvalue()


def _tar(members: list[tuple[str, str, str | bytes]]) -> bytes:
    """(name, type, payload): type 'file' (bytes), 'sym' or 'hard' (link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            else:
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = str(payload)
                tf.addfile(info)
    return buf.getvalue()


def _malicious(outside: Path) -> dict[str, tuple[str, bytes]]:
    abs_target = str(outside / "evil.txt")
    return {
        "zip-dotdot": ("zip", zip_bytes({"ok.txt": b"ok", "../evil.txt": b"pwned"})),
        "zip-deep-dotdot": ("zip", zip_bytes({"ok.txt": b"ok", "a/b/../../../evil.txt": b"pwned"})),
        "zip-absolute": ("zip", zip_bytes({"ok.txt": b"ok", abs_target: b"pwned"})),
        "zip-backslash": ("zip", zip_bytes({"ok.txt": b"ok", "..\\evil.txt": b"pwned"})),
        "zip-symlink-out": ("zip", _zip_with_symlink("link", "../outside", {"link/evil.txt": b"pwned"})),
        "tar-dotdot": ("tar.gz", _tar([("ok.txt", "file", b"ok"), ("../evil.txt", "file", b"pwned")])),
        "tar-absolute": ("tar.gz", _tar([("ok.txt", "file", b"ok"), (abs_target, "file", b"pwned")])),
        "tar-symlink-out": ("tar.gz", _tar([("ok.txt", "file", b"ok"), ("link", "sym", "../outside")])),
        "tar-symlink-abs": ("tar.gz", _tar([("ok.txt", "file", b"ok"), ("link", "sym", str(outside))])),
        "tar-write-through-link": (
            "tar.gz",
            _tar([("d", "sym", "."), ("d/x", "sym", ".."), ("d/x/evil.txt", "file", b"pwned")]),
        ),
        "tar-hardlink-out": ("tar.gz", _tar([("ok.txt", "file", b"ok"), ("h", "hard", "../outside/secret.txt")])),
        "rar-dotdot": ("rar", rar_bytes({"ok.txt": b"ok", "../evil.txt": b"pwned"})),
    }


CASES = sorted(_malicious(Path("/x")))


@pytest.mark.parametrize("case", CASES)
def test_malicious_archive_is_refused_and_writes_nothing(tmp_path, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("keep me")
    kind, data = _malicious(outside)[case]
    archive = tmp_path / f"evil.{kind}"
    archive.write_bytes(data)
    dest = tmp_path / "work" / "target"
    before = _snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=r"evil\.(zip|tar\.gz|rar): .*refus"):
        extract_archive(archive, dest)
    after = _snapshot(tmp_path)
    assert after - before <= {"work", "work/target"}, f"new files: {after - before}"
    assert not any(dest.iterdir()), "not even the safe entries are written"
    assert (outside / "secret.txt").read_text() == "keep me"
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "work" / "evil.txt").exists()


def test_links_inside_the_target_are_kept(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(_tar([("a/real.txt", "file", b"r"), ("a/alias.txt", "sym", "real.txt"), ("b", "hard", "a/real.txt")]))
    extract_archive(archive, tmp_path / "out")
    assert os.readlink(tmp_path / "out" / "a" / "alias.txt") == "real.txt"
    assert (tmp_path / "out" / "b").read_bytes() == b"r"


@pytest.mark.parametrize(
    "name,expected",
    [
        ("a/b.avi", "a/b.avi"),
        ("./a//b.avi", "a/b.avi"),
        ("-x (1)!.avi", "-x (1)!.avi"),
        ("./", None),
        ("../x", UnsafeArchiveError),
        ("a/../../x", UnsafeArchiveError),
        ("a\\..\\x", UnsafeArchiveError),
        ("/etc/passwd", UnsafeArchiveError),
        ("C:/x", UnsafeArchiveError),
    ],
)
def test_entry_names_are_checked_before_anything_is_written(name, expected):
    from madapter.data.acquire.archives import safe_relpath

    if expected is UnsafeArchiveError:
        with pytest.raises(UnsafeArchiveError, match="refusing"):
            safe_relpath(name, Path("x.zip"))
    else:
        assert safe_relpath(name, Path("x.zip")) == expected
