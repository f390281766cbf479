"""The download stage: get a dataset from its official source (or a mirror / local copy) into ``data/raw/<ds>``.

``download_dataset(params)`` is the one implementation the CLI, DVC stage, Prefect task and tests
call.  Per dataset it fetches the files listed in :mod:`madapter.data.acquire.sources`, verifies them,
and extracts archives safely (:mod:`madapter.data.acquire.archives`).  Progress is remembered in
``<raw>/.downloads/state.json`` — one entry per file with its sha256 and whether it was extracted —
so a re-run skips what is present and verified and picks up where a failed run stopped.

``dataset.source`` overrides where files come from:
- a URL: a mirror with the same relative layout as the official host (``<mirror>/<relpath>``);
- a directory: files the user already has, looked up as ``<dir>/<relpath>`` or ``<dir>/<name>``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import requests

from madapter.config import ConfigError, Params
from madapter.data.acquire.archives import concatenate_parts, extract_archive
from madapter.data.acquire.fetch import NotFoundError, copy_local, fetch_url
from madapter.data.acquire.sources import DatasetSource, RemoteFile, source_for
from madapter.fileio import file_digest, write_text_atomic
from madapter.paths import StagePaths

logger = logging.getLogger(__name__)

DOWNLOADS_DIR = ".downloads"
STATE_FILE = "state.json"
SSV2_PART = re.compile(r"^20bn-something-something-v2-(\d\d)$")
SSV2_LABEL_FILES = ("labels.json", "train.json", "validation.json", "test.json")
_MAX_SSV2_PARTS = 100


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


class _State:
    """``state.json``: relpath -> {sha256, size, extracted}; rewritten atomically after every file."""

    def __init__(self, path: Path):
        self.path = path
        self.files: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}

    def record(self, relpath: str, **info: object) -> None:
        self.files[relpath] = {**self.files.get(relpath, {}), **info}
        write_text_atomic(self.path, json.dumps(self.files, indent=1, sort_keys=True))


@dataclass
class _Fetcher:
    """Fetches files of one dataset from the official host, a mirror, or a local directory."""

    params: Params
    source: DatasetSource
    raw: Path
    session: requests.Session

    @property
    def downloads(self) -> Path:
        return self.raw / DOWNLOADS_DIR

    def expected_sha(self, relpath: str, default: str | None) -> str | None:
        if not self.params.download.verify_checksums:
            return None
        return self.params.download.checksums.get(relpath) or default

    def locate(self, relpath: str) -> str | Path:
        """Where ``relpath`` comes from: a URL or a local file."""
        override = self.params.dataset.source
        if override and not _is_url(override):
            root = Path(override).expanduser()
            nested, flat = root / relpath, root / relpath.rsplit("/", 1)[-1]
            return nested if nested.exists() or not flat.exists() else flat
        base = override or self.source.base_url
        if not base:
            raise ConfigError(f"dataset.source: required for {self.source.name} ({self.source.notes})")
        return base.rstrip("/") + "/" + relpath

    def get(self, relpath: str, dest: Path, sha256: str | None = None, recorded: str | None = None) -> str:
        """Fetch ``relpath`` to ``dest`` unless a verified copy is there; returns its sha256.

        ``recorded`` is the digest noted when this file was first downloaded: a copy already on
        disk must match it (or the pinned checksum) to be reused.
        """
        expected = self.expected_sha(relpath, sha256)
        if dest.is_file():
            digest = file_digest(dest)
            if digest == (expected or recorded or digest):
                logger.info("%s: already present and verified, skipping download", dest.name)
                return digest
            logger.warning("%s: present but its checksum does not match; downloading again", dest)
            dest.unlink()
        origin = self.locate(relpath)
        logger.info("fetching %s", origin)
        dl = self.params.download
        if isinstance(origin, Path):
            return copy_local(origin, dest, expected)
        return fetch_url(origin, dest, expected, dl.retries, dl.timeout_s, dl.backoff_s, self.session)


def _ensure_file(fetcher: _Fetcher, state: _State, rf: RemoteFile) -> None:
    """Download one file and extract it as its entry says; skip if the state says it is done."""
    raw = fetcher.raw
    keep = fetcher.params.download.keep_archives
    done = state.files.get(rf.relpath, {})
    pinned = fetcher.expected_sha(rf.relpath, rf.sha256)
    if rf.extract != "none" and done.get("extracted") and (pinned is None or pinned == done.get("sha256")):
        archive = fetcher.downloads / rf.relpath
        if not (keep and archive.is_file()) or file_digest(archive) == done["sha256"]:
            logger.info("%s: already downloaded (sha256 %s…) and extracted, skipping", rf.relpath, done["sha256"][:12])
            return
    if rf.extract == "none":
        dest = raw / rf.into / rf.name
        digest = fetcher.get(rf.relpath, dest, rf.sha256, done.get("sha256"))
        state.record(rf.relpath, sha256=digest, size=dest.stat().st_size, extracted=True)
        return
    archive = fetcher.downloads / rf.relpath
    digest = fetcher.get(rf.relpath, archive, rf.sha256, done.get("sha256"))
    state.record(rf.relpath, sha256=digest, size=archive.stat().st_size, extracted=False)
    extract_archive(archive, raw / rf.into, nested=rf.extract == "nested")
    state.record(rf.relpath, extracted=True)
    if not keep:
        archive.unlink()


def _expand_part_lists(fetcher: _Fetcher, state: _State) -> list[RemoteFile]:
    """Turn each CVDF ``*_path.txt`` (a list of part URLs) into :class:`RemoteFile` entries."""
    files: list[RemoteFile] = []
    base = (fetcher.source.base_url or "").rstrip("/") + "/"
    for plist in fetcher.source.part_lists:
        dest = fetcher.downloads / plist.relpath
        try:
            digest = fetcher.get(plist.relpath, dest)
        except NotFoundError:
            if plist.relpath in fetcher.source.extra_ok:
                logger.warning("%s: not available; skipping that split", plist.relpath)
                continue
            raise
        state.record(plist.relpath, sha256=digest, size=dest.stat().st_size)
        for line in dest.read_text().splitlines():
            url = line.strip()
            if not url:
                continue
            if url.startswith(base):
                relpath = url[len(base):]
            elif "://" in url:  # a list pointing elsewhere: keep <split>/<part>, the layout under the base
                relpath = "/".join(url.rstrip("/").rsplit("/", 2)[-2:])
            else:
                relpath = url
            files.append(RemoteFile(relpath, extract="archive", into=plist.into))
    return files


def _download_official(params: Params, raw: Path) -> Path:
    source = source_for(params.dataset.name)
    state = _State(raw / DOWNLOADS_DIR / STATE_FILE)
    with requests.Session() as session:
        fetcher = _Fetcher(params, source, raw, session)
        files = list(source.files)
        if source.part_lists:
            files += _expand_part_lists(fetcher, state)
        for rf in files:
            try:
                _ensure_file(fetcher, state, rf)
            except NotFoundError:
                if rf.relpath not in source.extra_ok:
                    raise
                logger.warning("%s: optional file not available at the source; continuing without it", rf.relpath)
    logger.info("%s: %d files downloaded/verified into %s", source.name, len(files), raw)
    return raw


# --------------------------------------------------------------------------- Something-Something v2


def _ssv2_from_url(fetcher: _Fetcher, raw: Path) -> list[Path]:
    """A mirror URL: fetch the label JSONs and parts ``-00``, ``-01``, … until the mirror says 404."""
    for name in SSV2_LABEL_FILES:
        try:
            fetcher.get(f"labels/{name}", raw / "labels" / name)
        except NotFoundError:
            if name != "test.json":
                raise
            logger.warning("ssv2: labels/test.json not on the mirror; continuing without it")
    parts: list[Path] = []
    for i in range(_MAX_SSV2_PARTS):
        relpath = f"20bn-something-something-v2-{i:02d}"
        try:
            fetcher.get(relpath, fetcher.downloads / relpath)
        except NotFoundError:
            break
        parts.append(fetcher.downloads / relpath)
    return parts


def _ssv2_from_dir(root: Path, raw: Path) -> list[Path]:
    """A directory the user has: label JSONs / ``labels.zip``, archive parts (possibly zipped), or webm files."""
    if not root.is_dir():
        raise ConfigError(f"dataset.source: {root} is not a directory (ssv2 needs the files you downloaded after login)")
    unzipped = raw / DOWNLOADS_DIR / "unzipped"
    for zipped in sorted(root.glob("*.zip")):
        extract_archive(zipped, unzipped)
    for name in SSV2_LABEL_FILES:
        found = next((p for base in (root, unzipped) if base.is_dir() for p in base.rglob(name)), None)
        if found:
            (raw / "labels").mkdir(parents=True, exist_ok=True)
            copy_local(found, raw / "labels" / name)
    parts = sorted(p for base in (root, unzipped) if base.is_dir() for p in base.rglob("*") if SSV2_PART.match(p.name))
    if not parts:
        webms = sorted(root.rglob("*.webm"))
        if not webms:
            raise ConfigError(f"dataset.source: {root} has neither 20bn-something-something-v2-?? parts nor .webm files")
        _mirror_tree(root, raw / "20bn-something-something-v2", suffixes={".webm"})
    return parts


def _download_ssv2(params: Params, raw: Path) -> Path:
    source = source_for("ssv2")
    override = params.dataset.source
    if not override:
        raise ConfigError(f"dataset.source: required for ssv2 — {source.notes}")
    state = _State(raw / DOWNLOADS_DIR / STATE_FILE)
    if state.files.get("videos", {}).get("extracted"):
        logger.info("ssv2: videos already extracted into %s, skipping", raw)
        return raw
    with requests.Session() as session:
        if _is_url(override):
            parts = _ssv2_from_url(_Fetcher(params, source, raw, session), raw)
        else:
            parts = _ssv2_from_dir(Path(override).expanduser(), raw)
    if parts:
        joined = concatenate_parts(parts, raw / DOWNLOADS_DIR / "20bn-something-something-v2.tar.gz")
        extract_archive(joined, raw)
        state.record("videos", sha256=file_digest(joined), extracted=True, parts=len(parts))
        if not params.download.keep_archives:
            joined.unlink()
            for part in parts:
                if raw in part.parents:
                    part.unlink()
    else:
        state.record("videos", extracted=True, parts=0)
    return raw


# --------------------------------------------------------------------------- list / synthetic


def _mirror_tree(src: Path, dest: Path, suffixes: set[str] | None = None) -> int:
    """Make ``dest`` hold the files of ``src`` as hard links (a copy across file systems).

    Hard links cost no space and are ordinary files for DVC; a file already there with the same
    size and mtime is left alone, so a re-run does nothing.
    """
    count = 0
    for path in sorted(src.rglob("*")):
        if not path.is_file() or (suffixes and path.suffix.lower() not in suffixes):
            continue
        target = dest / path.relative_to(src)
        st = path.stat()
        if target.is_file():
            tst = target.stat()
            if tst.st_size == st.st_size and int(tst.st_mtime) == int(st.st_mtime):
                continue
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
        count += 1
    return count


def _download_list(params: Params, raw: Path) -> Path:
    ds = params.dataset
    root = ds.list_root or (Path(ds.source) if ds.source and not _is_url(ds.source) else None)
    if root is not None:
        root = Path(root).expanduser()
        if not (root / "train.txt").is_file():
            raise ConfigError(f"dataset.list_root: {root} has no train.txt (expected lines 'relative/path.mp4 <label>')")
        if root.resolve() != raw.resolve():
            linked = _mirror_tree(root, raw)
            logger.info("list: %d new/changed files linked from %s into %s", linked, root, raw)
    elif not (raw / "train.txt").is_file():
        raise ConfigError(f"dataset.list_root: not set and {raw}/train.txt is missing; point list_root at your data")
    return raw


def download_dataset(params: Params) -> Path:
    """Stage 1: make ``data/raw/<ds>`` hold the dataset; returns that directory."""
    raw = StagePaths.from_params(params).raw
    name = params.dataset.name
    raw.mkdir(parents=True, exist_ok=True)
    if name == "synthetic":
        from madapter.data.acquire.synthetic import generate_synthetic

        return generate_synthetic(raw, params.dataset.synthetic, params.base.seed)
    if name == "list":
        return _download_list(params, raw)
    if name == "ssv2":
        return _download_ssv2(params, raw)
    return _download_official(params, raw)
