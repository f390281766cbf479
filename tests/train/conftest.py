"""Fixtures for the training tier: the model that must have LEARNED.

The tier's data (:data:`~tests.common.synthetic_data.TINY_DATA` for the frames path's machinery,
:data:`~tests.common.synthetic_data.LEARN_DATA` for the model that must learn), the real MLflow
server and the one local Ray are the session's (:mod:`tests.common.fixtures`).  ``trained`` is the
model the registry, gate and serving tests need: clearly better than chance on held-out videos,
trained on cached features (``train.source: features``), where epochs cost next to nothing.
``reference`` is the uninterrupted run on frames that a stopped-and-resumed run must end up equal to.
Both are built once, on one pytest-xdist worker with all their users (``tests/common/parallel.py``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.common.fixtures import local_ray
from tests.common.synthetic_data import learn_params, make_params


@pytest.fixture(scope="session")
def trained(learn_data_dir: Path, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    """The model that must have learned, plus its params: the real features stage (Ray Data, in the
    tier's Ray) on :data:`LEARN_DATA`, then a real 2-worker CPU TorchTrainer run of the head on its
    output.  Its checkpoint is the full model (backbone + branch), as a frames run's is."""
    from madapter.data.features.stage import extract_features
    from madapter.train.driver import train

    local_ray()
    outputs = tmp_path_factory.mktemp("trained") / "trained"
    params = learn_params(learn_data_dir, outputs, mlflow_server)
    started = time.perf_counter()
    extract_features(params)
    extracted = time.perf_counter()
    result = train(params)
    logging.getLogger(__name__).info("trained fixture: features %.1fs, train %.1fs", extracted - started,
                                     time.perf_counter() - extracted)
    return params, result


@pytest.fixture(scope="session")
def reference(data_dir: Path, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted 3-epoch 2-worker run on frames: the default tiny params."""
    from madapter.train.driver import train

    local_ray()
    params = make_params(data_dir, tmp_path_factory.mktemp("reference") / "reference", mlflow_server)
    return params, train(params)
