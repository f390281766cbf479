"""The real-material tier: real dataset clips and real ImageNet weights (see :mod:`tests.real.material`).

The material is fetched once per machine into a cache outside the repository and verified by
sha256.  When it cannot be fetched, every test of the tier ERRORS with one line saying why: it is
never skipped, so a CI run that lost its real tier cannot pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.common.fixtures import stop_ray_after_this_folder
from tests.real.material import MaterialError, RealMaterial, ensure_material

LITE0 = "tf_efficientnet_lite0"
"""The timm architecture the real weights belong to (efficientnet-pytorch's ``efficientnet-lite0``)."""


@pytest.fixture(scope="session")
def real_material() -> RealMaterial:
    try:
        return ensure_material()
    except MaterialError as err:
        pytest.fail(f"real material unavailable: {err}", pytrace=False)


def lite0_in_timm_names(source: Path, target: Path) -> Path:
    """The real weights renamed to timm's ``tf_efficientnet_lite0`` keys, as a user converting them would.

    efficientnet-pytorch and timm list the same tensors in the same order: pair them in order and
    check every shape.  BatchNorm's ``num_batches_tracked`` counters are left out, as TF ports and
    older torchvision files lack them (the backbone loader must accept that).
    """
    import timm

    src = [(k, v) for k, v in torch.load(source, map_location="cpu", weights_only=True).items()
           if not k.endswith("num_batches_tracked")]
    own = [(k, v) for k, v in timm.create_model(LITE0).state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(own):
        raise AssertionError(f"{source}: {len(src)} tensors, timm {LITE0} has {len(own)}")
    for (sk, sv), (tk, tv) in zip(src, own, strict=True):
        if sv.shape != tv.shape:
            raise AssertionError(f"{source}: {sk} {list(sv.shape)} does not pair with timm {tk} {list(tv.shape)}")
    torch.save({tk: sv.clone() for (_, sv), (tk, _) in zip(src, own, strict=True)}, target)
    return target


@pytest.fixture(scope="session")
def lite0_weights(real_material: RealMaterial, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real ImageNet EfficientNet-Lite0 weights under timm names (a ``model.weights_file``)."""
    return lite0_in_timm_names(real_material.lite0_weights, tmp_path_factory.mktemp("lite0") / "lite0_timm.pth")


_stop_ray_after_this_folder = pytest.fixture(scope="package", autouse=True)(stop_ray_after_this_folder)
"""the pipeline test runs Ray Data (features), then Ray Train: see :func:`tests.common.fixtures.stop_ray_after_this_folder`."""

