"""Build any tuning mode from the ``model`` section of params.yaml (one switch: ``tuning``)."""

from __future__ import annotations

import logging

from torch import nn

from madapter.config import ModelSection
from madapter.models.backbone import Backbone
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
    adapter: nn.Module
    if cfg.tuning == "madapter":
        adapter = MAdapterBranch(
            backbone.levels,
            num_classes,
            width=cfg.width,
            fusion=cfg.fusion,
            temporal=cfg.temporal,
            num_frames=cfg.num_frames,
            temporal_kernel=cfg.temporal_kernel,
            use_cls=cfg.use_cls,
            cls_dim=backbone.num_features,
            dropout=cfg.dropout,
        )
    else:
        adapter = PooledLinearHead(backbone.num_features, num_classes, cfg.dropout)
        if cfg.tuning == "inserted":
            n = insert_adapters(backbone, cfg.adapter_bottleneck, context)
            logger.info("inserted %d temporal bottleneck adapters into %s", n, cfg.backbone)
    model = VideoClassifier(backbone, adapter, cfg.tuning, context, cfg.half_precision, cfg.backbone_chunk)
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


def count_parameters(model: VideoClassifier) -> dict[str, int]:
    """Trainable, backbone and total parameter counts (adapters inserted into the backbone are not
    counted as backbone: they are the trainable part of ``inserted``)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for n, p in model.backbone.named_parameters() if ".adapter." not in n)
    return {"trainable": trainable, "backbone": backbone, "total": total}
