"""Where every dataset officially lives, in one place.

Each dataset is a base URL plus files named *relative to that base*.  Keeping the relative name
is what makes a ``dataset.source`` override work the same way for every dataset: a mirror URL
replaces the base (``<mirror>/<relpath>``) and a local directory is searched for ``<dir>/<relpath>``
(or just the file name, for people who saved everything flat).

Checksums: the official hosts publish none for these files, so ``sha256`` is ``None`` unless
someone pins one here or in ``params.yaml`` (``download.checksums``).  Unpinned files are hashed
on first download and the digest is recorded next to the data; a re-run verifies against it.

Kinetics videos come in hundreds of ``part_N.tar.gz`` files whose URLs are listed in a text
file per split (``k400_train_path.txt``); those lists are :class:`PartList` entries expanded at
download time.  Something-Something v2 sits behind a login, so it has no URLs at all: the user
points ``dataset.source`` at what they downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Extract = Literal["none", "archive", "nested", "parts"]
"""What to do with a file after download: keep it, extract it, extract it and then every archive
it contained (HMDB51's rar of rars), or treat it as one piece of a split archive (SSv2)."""


@dataclass(frozen=True)
class RemoteFile:
    relpath: str
    """Path relative to the dataset base URL; also where a mirror or local directory holds it."""
    extract: Extract = "archive"
    into: str = ""
    """Sub-directory of the raw dir the contents land in ('' = the raw dir itself)."""
    sha256: str | None = None
    size: int | None = None

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class PartList:
    """A text file listing the URLs of many archive parts (one per line), as CVDF ships Kinetics."""

    relpath: str
    into: str


@dataclass(frozen=True)
class DatasetSource:
    name: str
    base_url: str | None
    """``None``: no public URL (behind a login); ``dataset.source`` is required."""
    files: tuple[RemoteFile, ...] = ()
    part_lists: tuple[PartList, ...] = ()
    homepage: str = ""
    notes: str = ""
    extra_ok: tuple[str, ...] = field(default_factory=tuple)
    """Optional files: a missing one is logged, not fatal (e.g. a test CSV a mirror may lack)."""


def _kinetics(version: str, folder: str, tag: str, annotation_names: dict[str, str]) -> DatasetSource:
    """CVDF's Kinetics mirror: annotation CSVs plus per-split lists of tar.gz parts."""
    files = tuple(
        RemoteFile(f"annotations/{name}", extract="none", into="annotations") for name in annotation_names.values()
    )
    parts = tuple(PartList(f"{split}/{tag}_{split}_path.txt", into=split) for split in ("train", "val", "test"))
    return DatasetSource(
        name=f"kinetics{version}",
        base_url=f"https://s3.amazonaws.com/kinetics/{folder}/",
        files=files,
        part_lists=parts,
        homepage="https://github.com/cvdfoundation/kinetics-dataset",
        notes="Videos are CVDF's trimmed clips named <youtube_id>_<start:06d>_<end:06d>.mp4, one dir per split.",
        extra_ok=(f"annotations/{annotation_names['test']}", f"test/{tag}_test_path.txt"),
    )


SOURCES: dict[str, DatasetSource] = {
    "ucf101": DatasetSource(
        name="ucf101",
        base_url="https://www.crcv.ucf.edu/data/UCF101/",
        files=(
            RemoteFile("UCF101.rar"),
            RemoteFile("UCF101TrainTestSplits-RecognitionTask.zip"),
        ),
        homepage="https://www.crcv.ucf.edu/data/UCF101.php",
        notes="Videos extract to UCF-101/<Class>/v_<Class>_gXX_cYY.avi; splits to ucfTrainTestlist/.",
    ),
    "hmdb51": DatasetSource(
        name="hmdb51",
        base_url="https://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/",
        files=(
            RemoteFile("hmdb51_org.rar", extract="nested", into="videos"),
            RemoteFile("test_train_splits.rar"),
        ),
        homepage="https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/",
        notes="hmdb51_org.rar holds one <class>.rar per class; splits extract to testTrainMulti_7030_splits/.",
    ),
    "kinetics400": _kinetics("400", "400", "k400", {"train": "train.csv", "val": "val.csv", "test": "test.csv"}),
    "kinetics600": _kinetics("600", "600", "k600", {"train": "train.txt", "val": "val.txt", "test": "test.csv"}),
    "kinetics700": _kinetics("700", "700_2020", "k700_2020", {"train": "train.csv", "val": "val.csv", "test": "test.csv"}),
    "ssv2": DatasetSource(
        name="ssv2",
        base_url=None,
        homepage="https://www.qualcomm.com/developer/software/something-something-v-2-dataset",
        notes=(
            "Behind a login: download labels and the 20bn-something-something-v2-?? parts yourself and set "
            "dataset.source to that directory (or to an already extracted copy)."
        ),
    ),
}


def source_for(name: str) -> DatasetSource:
    """The official source of a downloadable dataset (not ``synthetic`` / ``list``, which have none)."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(
            f"dataset.name: '{name}' has no download source (known: {', '.join(sorted(SOURCES))})"
        ) from None
