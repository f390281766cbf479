"""Helpers for training and evaluating on cached features: a tiny model, a tiny frame store, and
features written through the real format (``FeatureWriter``) from the model's own ``extract``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from madapter.config import ModelSection, Params, params_from_dict
from madapter.data.clips import ClipDataset
from madapter.data.features.feature_store import FeatureWriter, LevelSpec, cache_key, write_features_meta
from madapter.data.store.frame_store import FrameStore, ShardWriter, write_store_meta
from madapter.models.checkpoint import describe_backbone
from madapter.models.classifier import VideoClassifier

CLASSES = ["a", "b", "c"]
FRAMES_PER_VIDEO, STORE_SIZE, IMG = 8, 40, 32


def tiny_cfg(tuning: str = "madapter", **overrides) -> ModelSection:
    """A random-init ViT-tiny at 32 px (2x2 tokens), 4 frames, a narrow branch."""
    return ModelSection(backbone="vit_tiny_patch16_224", img_size=IMG, num_frames=4, width=32, tuning=tuning,
                        **overrides)


def write_frame_store(root: Path, videos_per_class: int = 2, seed: int = 0) -> FrameStore:
    """A train split of random frames (larger than the crop, so random crops differ)."""
    rng = np.random.default_rng(seed)
    writer = ShardWriter(root / "train", shard_size=4, frames_per_video=FRAMES_PER_VIDEO, size=STORE_SIZE)
    for label, name in enumerate(CLASSES):
        for k in range(videos_per_class):
            frames = rng.integers(0, 256, (FRAMES_PER_VIDEO, STORE_SIZE, STORE_SIZE, 3), dtype=np.uint8)
            writer.add(f"{name}/v{k}.mp4", label, name, frames, FRAMES_PER_VIDEO)
    writer.close()
    write_store_meta(root, {"classes": CLASSES, "frames_per_video": FRAMES_PER_VIDEO, "size": STORE_SIZE})
    return FrameStore(root, "train")


def train_clips(model: VideoClassifier, store: FrameStore, seed: int = 0) -> ClipDataset:
    """The frames path's training clips for ``model`` (what the features stage's train views are)."""
    dc = model.data_config
    return ClipDataset(store, num_frames=model.config.num_frames, train=True, mean=dc["mean"], std=dc["std"],
                       crop_size=int(dc["input_size"][-1]), seed=seed)


def params_for(cfg: ModelSection, data_dir: Path = Path("/nonexistent"), **sections) -> Params:
    """Params around a model section (``sections``: other sections' values); no frame store by default."""
    base = {"data_dir": str(data_dir), **sections.pop("base", {})}
    return params_from_dict({"model": cfg.model_dump(mode="json"), "base": base, **sections}, "tests/features_train")


@torch.no_grad()
def write_features(root: Path, model: VideoClassifier, clips: ClipDataset, views: int,
                   dtype: str = "float16", split: str = "train") -> None:
    """Features of ``views`` epochs of ``clips`` (view v = epoch v), as the features stage stores them
    (``features.json``'s cache key as for default params around the model's section)."""
    model.eval()
    per_video = []
    for i in range(len(clips)):
        batch = []
        for v in range(views):
            clips.set_epoch(v)
            batch.append(clips[i][0])
        out = model.extract(torch.stack(batch))
        per_video.append(([lvl.numpy() for lvl in out.levels], out.pooled.numpy()))
    first_levels, first_pooled = per_video[0]
    specs = [LevelSpec(info.index, info.channels, tuple(arr.shape[2:4]))
             for info, arr in zip(model.backbone.levels, first_levels, strict=False)]
    writer = FeatureWriter(root / split, specs, model.config.num_frames, first_pooled.shape[-1], dtype, views,
                           len(clips), shard_size=5)
    store = clips.store
    for i, (levels, pooled) in enumerate(per_video):
        writer.add(store.paths[i], int(store.labels[i]), store.label_names[i], levels, pooled)
    writer.close()
    write_features_meta(root, {
        "enabled": True, "backbone": describe_backbone(model), "model_cfg": model.config.model_dump(mode="json"),
        "classes": list(store.classes), "num_frames": model.config.num_frames,
        "levels": [s.to_json() for s in specs], "pooled_dim": int(first_pooled.shape[-1]), "dtype": dtype,
        "splits": {split: {"views": views, "videos": len(clips)}},
        "cache_key": cache_key(params_for(model.config, features={"train_views": views, "dtype": dtype}),
                               describe_backbone(model), ""),
    })
