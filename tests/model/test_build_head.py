"""``build_head``: the adapter ``build_model`` attaches, buildable from level channels alone (no backbone)."""

from __future__ import annotations

import pytest
import torch

from madapter.models.backbone import LevelInfo
from madapter.models.baselines import PooledLinearHead
from madapter.models.build import build_head, build_model
from madapter.models.madapter import MAdapterBranch
from tests.model.conftest import CNN, VIT, tiny_cfg


@pytest.mark.parametrize("backbone, tuning", [(VIT, "madapter"), (CNN, "madapter"), (VIT, "linear")])
def test_build_head_is_build_models_adapter_from_the_same_seed(backbone: str, tuning: str) -> None:
    cfg = tiny_cfg(backbone, tuning=tuning)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=5)
    levels = [LevelInfo(info.index, info.channels) for info in model.backbone.levels]
    torch.manual_seed(0)
    head = build_head(cfg, levels, model.backbone.num_features, num_classes=5)
    assert type(head) is type(model.adapter)
    assert head.state_dict().keys() == model.adapter.state_dict().keys()
    for key, value in model.adapter.state_dict().items():
        torch.testing.assert_close(head.state_dict()[key], value, msg=key)


def test_build_head_shapes_follow_the_level_channels() -> None:
    branch = build_head(tiny_cfg(), [LevelInfo(0, 24), LevelInfo(3, 48)], pooled_dim=32, num_classes=3)
    assert isinstance(branch, MAdapterBranch) and len(branch.adapters) == 2
    levels = [torch.randn(2, 8, 4, 4, 24), torch.randn(2, 8, 2, 2, 48)]
    assert branch(levels, torch.randn(2, 8, 32)).shape == (2, 3)
    linear = build_head(tiny_cfg(tuning="linear"), [], pooled_dim=32, num_classes=3)
    assert isinstance(linear, PooledLinearHead) and linear([], torch.randn(2, 8, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        build_head(tiny_cfg(), [], 32, 0)
