"""Build any tuning mode from the ``model`` section of params.yaml (one switch: ``tuning``)."""

from __future__ import annotations

import logging

from torch import nn

from madapter.config import ModelSection
from madapter.models.backbone import Backbone, LevelInfo
from madapter.models.baselines import FrameContext, PooledLinearHead, insert_adapters
from madapter.models.classifier import VideoClassifier
from madapter.models.madapter import MAdapterBranch

logger = logging.getLogger(__name__)


def build_model(cfg: ModelSection, num_classes: int) -> VideoClassifier:
    """Create the backbone, attach the adapter of ``cfg.tuning``, freeze what must be frozen."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    backbone = Backbone(
        cfg.backbone,
        levels=cfg.levels,
        img_size=cfg.img_size,
        pretrained=cfg.pretrained,
        weights_file=cfg.weights_file,
        init_seed=cfg.init_seed,
    )
    context = FrameContext(cfg.num_frames)
    adapter = build_head(cfg, backbone.levels, backbone.num_features, num_classes)
    if cfg.tuning == "inserted":
        n = insert_adapters(backbone, cfg.adapter_bottleneck, context)
        logger.info("inserted %d temporal bottleneck adapters into %s", n, cfg.backbone)
    model = VideoClassifier(backbone, adapter, cfg.tuning, context, cfg.half_precision, cfg.backbone_chunk,
                            cfg.level_pool)
    if cfg.level_pool is not None and not model.uses_levels:
        logger.info("model.level_pool: %d has no effect with tuning %s (its head reads no levels)",
                    cfg.level_pool, cfg.tuning)
    model.config = cfg
    counts = count_parameters(model)
    logger.info(
        "built %s model on %s (levels %s): %d trainable / %d backbone parameters (%.2f%%)",
        cfg.tuning,
        cfg.backbone,
        backbone.level_indices,
        counts["trainable"],
        counts["backbone"],
        100.0 * counts["trainable"] / max(counts["backbone"], 1),
    )
    return model


def build_head(cfg: ModelSection, levels: list[LevelInfo], pooled_dim: int, num_classes: int) -> nn.Module:
    """The head of ``cfg.tuning`` on top of backbone outputs shaped like ``levels`` and ``pooled_dim``.

    ``madapter``: the branch over the tapped levels (channels per level) plus the pooled feature
    (``use_cls``); every other mode: the linear head on the time-averaged pooled feature.  It is
    the ``adapter`` of :func:`build_model` and, alone, the model that trains on cached features
    (:mod:`madapter.models.headless`), so both initialise it the same way from the same seed.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if cfg.tuning == "madapter":
        return MAdapterBranch(
            levels,
            num_classes,
            width=cfg.width,
            fusion=cfg.fusion,
            temporal=cfg.temporal,
            num_frames=cfg.num_frames,
            temporal_kernel=cfg.temporal_kernel,
            use_cls=cfg.use_cls,
            cls_dim=pooled_dim,
            dropout=cfg.dropout,
        )
    return PooledLinearHead(pooled_dim, num_classes, cfg.dropout)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable, backbone and total parameter counts (adapters inserted into the backbone are not
    counted as backbone: they are the trainable part of ``inserted``).  A head trained on cached
    features (:class:`~madapter.models.headless.FeatureClassifier`) has no backbone: 0."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    owned = model.backbone.named_parameters() if hasattr(model, "backbone") else ()
    backbone = sum(p.numel() for n, p in owned if ".adapter." not in n)
    return {"trainable": trainable, "backbone": backbone, "total": total}
