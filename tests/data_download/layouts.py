"""Fixture datasets in each *official* layout, written at test time into a directory laid out like
the dataset's host (``<host>/<relpath>`` as in ``madapter.data.acquire.sources``), ready to be served.

Videos are tiny: real AVIs (8 frames, 32x32, mpeg4, via PyAV) where torchvision must read them,
dummy bytes elsewhere (these tests stop at the index).
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from tests.data_download.rarwriter import rar_bytes, write_rar


def tiny_avi(frames: int = 8, size: int = 32, seed: int = 0) -> bytes:
    """A real, decodable AVI (mpeg4) of ``frames`` random frames."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def dummy_video(tag: str) -> bytes:
    return f"not really a video: {tag}\n".encode() * 20


def tar_gz_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@dataclass
class Layout:
    host: Path
    """Directory to serve (or to use as a local ``dataset.source``)."""
    expected: dict[str, set[str]] = field(default_factory=dict)
    """split -> relative paths (under the raw dir) the index must hold (fold 1 for UCF/HMDB)."""
    classes: list[str] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)
    """Listed videos deliberately absent from the archives."""


# --------------------------------------------------------------------------- UCF101

UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
UCF_GROUPS = 6


def _ucf_file_token(cls: str) -> str:
    """The real quirk: folder ``HandstandPushups``, file names ``v_HandStandPushups_...``."""
    return "HandStandPushups" if cls == "HandstandPushups" else cls


def ucf101(host: Path, real_videos: bool = True) -> Layout:
    """``UCF101.rar`` (UCF-101/<Class>/v_*.avi) + ``UCF101TrainTestSplits-RecognitionTask.zip`` (CRLF lists).

    Fold k tests on groups 2k-1 and 2k, trains on the rest (the real folds split by group too).
    One listed video (YoYo g06) is left out of the rar to exercise "listed but missing".
    """
    host.mkdir(parents=True, exist_ok=True)
    videos: dict[str, bytes | None] = {"UCF-101": None}
    lists: dict[str, list[str]] = {}
    layout = Layout(host, classes=list(UCF_CLASSES))
    for fold in (1, 2, 3):
        lists[f"trainlist{fold:02d}.txt"], lists[f"testlist{fold:02d}.txt"] = [], []
    for label, cls in enumerate(UCF_CLASSES):
        videos[f"UCF-101/{cls}"] = None
        for g in range(1, UCF_GROUPS + 1):
            name = f"{cls}/v_{_ucf_file_token(cls)}_g{g:02d}_c01.avi"
            if (cls, g) == ("YoYo", 6):
                layout.missing.add(name)
            else:
                seed = label * 100 + g
                videos[f"UCF-101/{name}"] = tiny_avi(seed=seed) if real_videos else dummy_video(name)
            for fold in (1, 2, 3):
                if g in (2 * fold - 1, 2 * fold):
                    lists[f"testlist{fold:02d}.txt"].append(name)
                else:
                    lists[f"trainlist{fold:02d}.txt"].append(f"{name} {label + 1}")
                if fold == 1 and name not in layout.missing:
                    split = "test" if g in (1, 2) else "train"
                    layout.expected.setdefault(split, set()).add(f"UCF-101/{name}")
    write_rar(host / "UCF101.rar", videos)
    split_zip = {"ucfTrainTestlist/classInd.txt": "".join(f"{i + 1} {c}\r\n" for i, c in enumerate(UCF_CLASSES))}
    split_zip.update({f"ucfTrainTestlist/{k}": "".join(ln + "\r\n" for ln in v) for k, v in lists.items()})
    (host / "UCF101TrainTestSplits-RecognitionTask.zip").write_bytes(
        zip_bytes({k: v.encode() for k, v in split_zip.items()})
    )
    layout.expected.setdefault("val", set())
    return layout


# --------------------------------------------------------------------------- HMDB51

HMDB_CLASSES = ["brush_hair", "cartwheel", "pick"]
HMDB_NAMES = [
    "April_09_{c}_u_nm_np1_ba_goo_0.avi",
    "(Rad)Schlag_die_Bank!_{c}_f_cm_np1_le_med_0.avi",
    "-leading_dash_{c}_f_nm_np1_fr_bad_1.avi",
    "Über_die_Brücke_{c}_h_cm_np2_ri_goo_2.avi",
    "#20_Rhythm_{c}_u_nm_np1_fr_goo_0.avi",
]


def hmdb_tag(index: int, fold: int) -> int:
    """1 = train, 2 = test, 0 = unused; rotated per fold so folds differ."""
    return (1, 1, 2, 0, 2)[(index + fold) % 5]


def hmdb51(host: Path, real_videos: bool = True) -> Layout:
    """``hmdb51_org.rar`` holding one ``<class>.rar`` per class (a rar of rars) + ``test_train_splits.rar``."""
    host.mkdir(parents=True, exist_ok=True)
    layout = Layout(host, classes=list(HMDB_CLASSES))
    outer: dict[str, bytes | None] = {}
    splits: dict[str, bytes | None] = {"testTrainMulti_7030_splits": None}
    for label, cls in enumerate(HMDB_CLASSES):
        inner: dict[str, bytes | None] = {cls: None}
        for i, pattern in enumerate(HMDB_NAMES):
            name = pattern.format(c=cls)
            inner[f"{cls}/{name}"] = tiny_avi(seed=label * 10 + i) if real_videos else dummy_video(name)
        outer[f"{cls}.rar"] = rar_bytes(inner)
        for fold in (1, 2, 3):
            lines = "".join(f"{p.format(c=cls)} {hmdb_tag(i, fold)} \n" for i, p in enumerate(HMDB_NAMES))
            splits[f"testTrainMulti_7030_splits/{cls}_test_split{fold}.txt"] = lines.encode()
        for i, pattern in enumerate(HMDB_NAMES):
            tag = hmdb_tag(i, 1)
            if tag:
                layout.expected.setdefault("train" if tag == 1 else "test", set()).add(
                    f"videos/{cls}/{pattern.format(c=cls)}"
                )
    write_rar(host / "hmdb51_org.rar", outer)
    write_rar(host / "test_train_splits.rar", splits)
    layout.expected.setdefault("val", set())
    return layout


# --------------------------------------------------------------------------- Kinetics

KINETICS_ROWS = {
    "train": [
        ("abseiling", "-0aBcDeFgHi", 10, 20),
        ("abseiling", "__NrybzYzUg", 415, 425),
        ("passing American football (in game)", "x1y2z3w4v5u", 0, 10),
        ("passing American football (in game)", "-missingvid", 5, 15),
        ('dancing "gangnam style"', "q9w8e7r6t5y", 30, 40),
    ],
    "val": [
        ("abseiling", "vAl0000000a", 1, 11),
        ("passing American football (in game)", "-vAl000000b", 2, 12),
    ],
    "test": [('dancing "gangnam style"', "tEsT000000a", 3, 13)],
}


def kinetics(host: Path, folder: str = "400", tag: str = "k400") -> Layout:
    """CVDF layout: ``annotations/*.csv`` + ``<split>/<tag>_<split>_path.txt`` listing ``part_N.tar.gz``."""
    layout = Layout(host, classes=sorted({r[0] for r in KINETICS_ROWS["train"]}))
    official = f"https://s3.amazonaws.com/kinetics/{folder}/"
    (host / "annotations").mkdir(parents=True, exist_ok=True)
    for split, rows in KINETICS_ROWS.items():
        with open(host / "annotations" / f"{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh, quoting=csv.QUOTE_MINIMAL)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
            for label, vid, start, end in rows:
                writer.writerow([label, vid, start, end, split, 0])
        files = {
            f"{vid}_{start:06d}_{end:06d}.mp4": dummy_video(vid)
            for _, vid, start, end in rows
            if vid != "-missingvid"
        }
        names = sorted(files)
        # two parts for train (to check several parts land in one dir), one otherwise
        chunks = [names[::2], names[1::2]] if split == "train" else [names]
        (host / split).mkdir(exist_ok=True)
        urls = []
        for i, chunk in enumerate(chunks):
            (host / split / f"part_{i}.tar.gz").write_bytes(tar_gz_bytes({n: files[n] for n in chunk}))
            urls.append(f"{official}{split}/part_{i}.tar.gz")
        (host / split / f"{tag}_{split}_path.txt").write_text("\n".join(urls) + "\n")
        layout.expected[split] = {f"{split}/{n}" for n in names}
    layout.missing.add("train/-missingvid_000005_000015.mp4")
    return layout


# --------------------------------------------------------------------------- Something-Something v2

SSV2_LABELS = {
    "Approaching something with your camera": "0",
    "Putting something on a surface": "1",
    "Pushing something from left to right": "2",
}
SSV2_ITEMS = {
    "train": [
        ("78687", "Putting [something] on a surface"),
        ("42326", "Approaching [something] with your camera"),
        ("100", "Pushing [something] from left to right"),
    ],
    "validation": [("24", "Putting [something] on a surface"), ("5", "Pushing [something] from left to right")],
}


def ssv2(host: Path, zipped: bool = False) -> Layout:
    """Label JSONs + the videos as ``20bn-something-something-v2-00/-01`` (pieces of one tar.gz of webms).

    ``zipped=True`` mimics the newer distribution: each piece inside its own ``.zip`` and the
    JSONs in ``labels.zip`` (a local directory the user downloaded after logging in).
    """
    host.mkdir(parents=True, exist_ok=True)
    labels = {
        "labels.json": SSV2_LABELS,
        "train.json": [{"id": i, "label": t.lower(), "template": t, "placeholders": ["x"]} for i, t in SSV2_ITEMS["train"]],
        "validation.json": [{"id": i, "label": t, "template": t, "placeholders": []} for i, t in SSV2_ITEMS["validation"]],
        "test.json": [{"id": "999"}],
    }
    videos = {
        f"20bn-something-something-v2/{i}.webm": dummy_video(i)
        for items in SSV2_ITEMS.values()
        for i, _ in items
    }
    videos["20bn-something-something-v2/999.webm"] = dummy_video("999")
    blob = tar_gz_bytes(videos)
    half = len(blob) // 2
    pieces = {"20bn-something-something-v2-00": blob[:half], "20bn-something-something-v2-01": blob[half:]}
    if zipped:
        (host / "labels.zip").write_bytes(zip_bytes({f"labels/{k}": json.dumps(v).encode() for k, v in labels.items()}))
        for name, data in pieces.items():
            (host / f"{name}.zip").write_bytes(zip_bytes({name: data}))
    else:
        (host / "labels").mkdir(exist_ok=True)
        for k, v in labels.items():
            (host / "labels" / k).write_text(json.dumps(v))
        for name, data in pieces.items():
            (host / name).write_bytes(data)
    layout = Layout(host, classes=list(SSV2_LABELS))
    layout.expected["train"] = {f"20bn-something-something-v2/{i}.webm" for i, _ in SSV2_ITEMS["train"]}
    layout.expected["val"] = {f"20bn-something-something-v2/{i}.webm" for i, _ in SSV2_ITEMS["validation"]}
    layout.expected["test"] = set(layout.expected["val"])
    return layout
