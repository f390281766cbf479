"""Safe extraction of the archive formats datasets ship in: zip, tar(.gz/.bz2/.xz) and rar.

Why not ``extractall``: archives from the internet may hold entries that would land outside the
target (``../x``, ``/etc/x``, a symlink to ``/`` followed by a file written through it).  Here
every archive is first *planned* — each entry's name is checked and normalised, links must point
inside the target, nothing may be written through a link — and only then written, into a
staging directory next to the target that is merged in at the end.  So an unsafe archive
writes nothing at all, and an extraction that dies half-way leaves only the staging directory,
which the next run removes.

Names are never passed through a shell: zip and tar are read in Python, RAR entries are streamed
by ``rarfile`` (stored entries in pure Python, compressed ones piped through ``unar`` or
``bsdtar`` with an argument list ending in ``--``), so spaces, ``( ) !``, a leading ``-`` and
non-ASCII names are just names.  macOS litter (``__MACOSX/``, ``._*``, ``.DS_Store``) is skipped.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, TypeVar

import rarfile
from tqdm import tqdm

from madapter.errors import MissingToolError, StageError, disk_error_line
from madapter.fileio import atomic_open

logger = logging.getLogger(__name__)

ArchiveKind = Literal["zip", "tar", "rar"]
_Member = TypeVar("_Member")
_STAGING_PREFIX = ".extracting-"
_MAX_NESTING = 3


_NO_RAR_TOOL = (
    "no RAR tool found (unar, bsdtar, unrar or 7z on PATH); install unar or bsdtar: run scripts/setup-system.sh "
    "(or: sudo apt-get install unar libarchive-tools), then re-run"
)


class UnsafeArchiveError(ValueError, StageError):
    """An entry would be written outside the target directory; nothing was extracted.

    A :class:`StageError` (the CLI prints its one line): a hostile or broken download, not a bug.
    """


class ArchiveError(StageError):
    """The archive cannot be read (corrupt or unsupported entry); one line naming it and what to do."""


@dataclass(frozen=True)
class _Entry:
    """One planned entry: a safe relative path and how to produce it."""

    path: str
    kind: Literal["file", "dir", "symlink", "hardlink"]
    size: int = 0
    link: str = ""
    """symlink: target relative to the entry's directory; hardlink: the safe path of the entry it copies."""
    open: Callable[[], AbstractContextManager[IO[bytes]]] | None = None


def archive_kind(path: Path) -> ArchiveKind | None:
    """Recognise an archive by its content (not its name: mirrors rename files)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"Rar!\x1a\x07"):
        return "rar"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    try:
        return "tar" if tarfile.is_tarfile(path) else None
    except (OSError, tarfile.TarError):
        return None


def is_ignored(name: str) -> bool:
    """macOS resource forks and Finder files that come along in zips made on a Mac."""
    parts = name.replace("\\", "/").split("/")
    base = parts[-1] if parts[-1] else (parts[-2] if len(parts) > 1 else "")
    return "__MACOSX" in parts or base.startswith("._") or base == ".DS_Store"


def safe_relpath(name: str, archive: Path) -> str | None:
    """Normalise an entry name to a relative POSIX path, or refuse it.

    Returns ``None`` for names that are only the archive root (``./``).  Backslashes are treated
    as separators because zips made on Windows use them and ``..\\`` must not slip through.
    """
    cleaned = name.replace("\\", "/")
    if cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":" and cleaned[0].isalpha()):
        raise UnsafeArchiveError(f"{archive}: entry '{name}' has an absolute path; refusing to extract the archive")
    parts = [p for p in cleaned.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: entry '{name}' climbs out with '..'; refusing to extract the archive")
    return "/".join(parts) or None


def _check_link_target(entry_path: str, target: str, archive: Path, name: str) -> str:
    """A symlink target must stay inside the extraction root once resolved from the link's folder."""
    if target.startswith("/") or not target:
        raise UnsafeArchiveError(f"{archive}: link '{name}' points to '{target}' outside the target; refusing")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(entry_path), target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(f"{archive}: link '{name}' points to '{target}' outside the target; refusing")
    return target


def _check_not_through_link(entries: list[_Entry], archive: Path) -> None:
    """Refuse entries whose parent directory is a link declared in the same archive."""
    links = {e.path for e in entries if e.kind == "symlink"}
    if not links:
        return
    for e in entries:
        parents = e.path.split("/")[:-1]
        for i in range(1, len(parents) + 1):
            if "/".join(parents[:i]) in links:
                raise UnsafeArchiveError(f"{archive}: entry '{e.path}' would be written through a link; refusing")


# --------------------------------------------------------------------------- planning per format


def _kept(
    members: Iterable[_Member], name_of: Callable[[_Member], str], archive: Path
) -> Iterator[tuple[_Member, str]]:
    """``(member, safe relative path)`` of every member worth extracting: macOS litter and the root skipped."""
    for member in members:
        name = name_of(member)
        path = None if is_ignored(name) else safe_relpath(name, archive)
        if path is not None:
            yield member, path


def _plan_zip(zf: zipfile.ZipFile, archive: Path) -> list[_Entry]:
    entries: list[_Entry] = []
    for info, path in _kept(zf.infolist(), lambda i: i.filename, archive):
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            target = zf.read(info).decode("utf-8", "surrogateescape")
            entries.append(_Entry(path, "symlink", link=_check_link_target(path, target, archive, info.filename)))
        elif info.is_dir():
            entries.append(_Entry(path, "dir"))
        else:
            entries.append(_Entry(path, "file", info.file_size, open=lambda info=info: zf.open(info)))
    return entries


def _plan_tar(tf: tarfile.TarFile, archive: Path) -> list[_Entry]:
    entries: list[_Entry] = []
    for member, path in _kept(tf.getmembers(), lambda m: m.name, archive):
        if member.issym():
            entries.append(_Entry(path, "symlink", link=_check_link_target(path, member.linkname, archive, member.name)))
        elif member.islnk():
            target = safe_relpath(member.linkname, archive)
            if target is None:
                raise UnsafeArchiveError(f"{archive}: hard link '{member.name}' has no target; refusing")
            entries.append(_Entry(path, "hardlink", link=target))
        elif member.isdir():
            entries.append(_Entry(path, "dir"))
        elif member.isfile():
            entries.append(_Entry(path, "file", member.size, open=lambda m=member: _tar_member(tf, m)))
        else:
            raise UnsafeArchiveError(
                f"{archive}: entry '{member.name}' is a device/fifo, which no dataset needs; refusing"
            )
    return entries


@contextmanager
def _tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[IO[bytes]]:
    fh = tf.extractfile(member)
    if fh is None:
        raise ArchiveError(f"{tf.name}: cannot read entry '{member.name}'")
    with fh:
        yield fh


def _plan_rar(rf: rarfile.RarFile, archive: Path) -> list[_Entry]:
    entries: list[_Entry] = []
    for info, path in _kept(rf.infolist(), lambda i: i.filename, archive):
        if info.is_symlink():
            raise UnsafeArchiveError(f"{archive}: entry '{info.filename}' is a link; links in RAR are not supported")
        if info.is_dir():
            entries.append(_Entry(path, "dir"))
        else:
            entries.append(_Entry(path, "file", info.file_size, open=lambda info=info: rf.open(info)))
    return entries


def rar_backend() -> str:
    """Name of the external tool ``rarfile`` uses for compressed RAR entries (unrar, unar, bsdtar, 7z)."""
    try:
        setup = rarfile.tool_setup()
    except rarfile.RarCannotExec:
        raise MissingToolError(f"unar: {_NO_RAR_TOOL}") from None
    return Path(setup.get_cmdline("check_cmd", None)[0]).name


@contextmanager
def _open_plan(archive: Path) -> Iterator[list[_Entry]]:
    kind = archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                yield _plan_zip(zf, archive)
        elif kind == "tar":
            with tarfile.open(archive) as tf:
                yield _plan_tar(tf, archive)
        elif kind == "rar":
            with rarfile.RarFile(archive) as rf:
                yield _plan_rar(rf, archive)
        else:
            raise ArchiveError(f"{archive}: not a zip, tar or rar archive (corrupt or incomplete download?)")
    except rarfile.RarCannotExec as err:  # before rarfile.Error: re-downloading would not help
        raise MissingToolError(f"{archive}: cannot extract its compressed entries: {_NO_RAR_TOOL}") from err
    except (zipfile.BadZipFile, tarfile.TarError, rarfile.Error, EOFError) as err:
        raise ArchiveError(f"{archive}: cannot read archive ({err}); delete it and download again") from err


# --------------------------------------------------------------------------- writing


def _inside(root: Path, path: Path) -> bool:
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    return real == real_root or real.startswith(real_root + os.sep)


def _write_entries(entries: list[_Entry], staging: Path, archive: Path) -> None:
    total = sum(e.size for e in entries)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"extract {archive.name}", leave=False, disable=None) as bar:
        for e in entries:
            out = staging / e.path
            if not _inside(staging, out.parent):
                raise UnsafeArchiveError(f"{archive}: entry '{e.path}' resolves outside the target; refusing")
            if e.kind == "dir":
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.is_symlink() or out.exists():
                out.unlink()
            if e.kind == "symlink":
                os.symlink(e.link, out)
                if not _inside(staging, out):
                    raise UnsafeArchiveError(f"{archive}: link '{e.path}' resolves outside the target; refusing")
            elif e.kind == "hardlink":
                source = staging / e.link
                if not source.is_file() or not _inside(staging, source):
                    raise UnsafeArchiveError(f"{archive}: hard link '{e.path}' -> '{e.link}' is not inside; refusing")
                shutil.copyfile(source, out)
            else:
                assert e.open is not None
                with e.open() as src, open(out, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                        bar.update(len(chunk))


def _merge(staging: Path, dest: Path) -> list[Path]:
    """Move everything from ``staging`` into ``dest`` (files replace same-named files)."""
    written: list[Path] = []
    for root, dirs, files in os.walk(staging):
        rel = Path(root).relative_to(staging)
        target_dir = dest / rel
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            target = target_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(Path(root) / name, target)
            written.append(target)
    shutil.rmtree(staging)
    return written


def extract_archive(archive: Path, dest: Path, nested: bool = False) -> list[Path]:
    """Extract ``archive`` into ``dest`` safely; returns the files written.

    ``nested=True`` also extracts every archive found inside (HMDB51's rar of per-class rars)
    into the folder it sits in, and deletes it afterwards.
    Raises :class:`UnsafeArchiveError` (nothing written) or :class:`ArchiveError`.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f"{_STAGING_PREFIX}{archive.name}"
    if staging.exists():
        logger.info("removing the leftovers of an interrupted extraction: %s", staging)
        shutil.rmtree(staging)
    with _open_plan(archive) as entries:
        _check_not_through_link(entries, archive)
        staging.mkdir()
        try:
            _write_entries(entries, staging, archive)
        except BaseException as err:
            shutil.rmtree(staging, ignore_errors=True)
            line = disk_error_line(err, dest) if isinstance(err, OSError) else None
            if line is not None:  # a full disk while writing: name where, not a traceback
                raise ArchiveError(f"extracting {archive.name}: {line}") from err
            raise
    written = _merge(staging, dest)
    logger.info("extracted %d files from %s into %s", len(written), archive.name, dest)
    if nested:
        written = _extract_nested(written, depth=1)
    return written


def _extract_nested(files: list[Path], depth: int) -> list[Path]:
    result: list[Path] = []
    inner = [f for f in files if f.is_file() and not f.is_symlink() and archive_kind(f) is not None]
    result = [f for f in files if f not in set(inner)]
    if inner and depth > _MAX_NESTING:
        raise ArchiveError(f"{inner[0]}: archives nested more than {_MAX_NESTING} deep; refusing to go on")
    for arc in tqdm(inner, desc="nested archives", unit="archive", leave=False, disable=None):
        extracted = extract_archive(arc, arc.parent)
        arc.unlink()
        result.extend(_extract_nested(extracted, depth + 1))
    return result


def concatenate_parts(parts: list[Path], out: Path) -> Path:
    """Join the pieces of a split archive (``name-00``, ``name-01``, ...) in name order, atomically."""
    with atomic_open(out, "wb") as dst:
        for part in sorted(parts):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    return out
