"""The real-material tier: real dataset clips and real ImageNet weights (see :mod:`benchmarks.real_material`).

The material is fetched once per machine into a cache outside the repository and verified by
sha256.  When it cannot be fetched, every test of the tier ERRORS with one line saying why: it is
never skipped, so a CI run that lost its real tier cannot pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.real_material import MaterialError, RealMaterial, ensure_material
from benchmarks.real_set import lite0_in_timm_names
from tests.common.fixtures import stop_ray_after_this_folder


@pytest.fixture(scope="session")
def real_material() -> RealMaterial:
    try:
        return ensure_material()
    except MaterialError as err:
        pytest.fail(f"real material unavailable: {err}", pytrace=False)


@pytest.fixture(scope="session")
def lite0_weights(real_material: RealMaterial, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real ImageNet EfficientNet-Lite0 weights under timm names (a ``model.weights_file``)."""
    return lite0_in_timm_names(real_material.lite0_weights, tmp_path_factory.mktemp("lite0") / "lite0_timm.pth")


_stop_ray_after_this_folder = pytest.fixture(scope="package", autouse=True)(stop_ray_after_this_folder)
"""the pipeline test runs Ray Data (features), then Ray Train: see :func:`tests.common.fixtures.stop_ray_after_this_folder`."""

