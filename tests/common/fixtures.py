"""The session's shared fixtures, defined ONCE (loaded by ``tests/conftest.py`` as a plugin).

Why one place: a fixture imported into several conftest files is a separate fixture in each, so
a "session" server or data set was built once per folder (five ``mlflow server`` processes, six
synthetic builds, eight Ray starts in one run).  Everything here exists once per session:

- ``data_dir`` / ``learn_data_dir``: the synthetic sets of :mod:`tests.common.synthetic_data`
  through the REAL data stages (mp4 files, decord scan and decode);
- ``mlflow_server``: a real ``mlflow server`` (SQLite + local artifacts) on a loopback port;
- ``ray_session``: the one local Ray (:func:`local_ray`), for Ray Train, Ray Data and Tune alike;
- ``harness``: Prefect's test API server;
- ``finished_pipeline``: a repository copy in which the Prefect flow has run every stage once;
  modules take their own copy of it (:func:`tests.common.repo.copy_finished`).

And for every test: torch on one thread (the machine is shared) and the ``madapter`` logs in the
failure report.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.common.processes import BIN, free_port, stop, wait_http
from tests.common.repo import SMALLEST_OVERRIDES, commit, copy_repo, write_params
from tests.common.synthetic_data import build_synthetic_data, learn_params, make_params

LOCAL_RAY_STORE_BYTES = 200 * 2**20
"""The local Ray's object store: the largest thing through it is a features work item of the tests' sets."""
RAY_IDLE_WAIT_S = 60.0
"""How long a Ray's CPUs may take to come free after a test (actors end within a second or two)."""


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the machine is shared: the test process keeps to one core


@pytest.fixture(autouse=True)
def _madapter_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Stage logs (drop counts, fallbacks, decisions) show up in failure reports."""
    caplog.set_level(logging.INFO, logger="madapter")


def _sigint_state() -> tuple[bool, bool]:
    """(ignored, blocked) for SIGINT in this process's main thread, as a child started now inherits them
    (Linux /proc; elsewhere never either)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False, False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    bit = 1 << (signal.SIGINT - 1)
    return bool(int(fields["SigIgn"], 16) & bit), bool(int(fields["SigBlk"], 16) & bit)


@pytest.fixture(autouse=True)
def _sigint_as_found() -> Iterator[None]:
    """A test must not leave SIGINT ignored or blocked in the pytest process: every process started
    afterwards would inherit it and be deaf to Ctrl-C (a benchmark's SIGINT test once timed out that
    way, depending on which tests its pytest-xdist worker had run before).  Restores it and fails the
    test that left it."""
    before = _sigint_state()
    yield
    after = _sigint_state()
    if after != before:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        pytest.fail(f"this test left SIGINT (ignored, blocked) = {after} in the pytest process, found {before}: "
                    "restore the handler and signal mask it changed", pytrace=False)


def local_ray() -> str:
    """The session's local Ray (2 CPUs, bounded object store, no dashboard, the stages' job env), started
    when none is connected, e.g. first use or after a cluster test stopped it; returns its GCS address.

    ``address="local"``: always a new Ray of this process, never a ``ray start`` cluster that happens
    to run on the machine.  Folders share it, except that a folder that runs Ray Data stops it when it
    is done (:func:`stop_ray_after_this_folder`), and :func:`_wait_until_idle` fails in one line when a
    test left its CPUs taken.
    """
    import ray

    from madapter.ray_runtime import worker_runtime_env

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, object_store_memory=LOCAL_RAY_STORE_BYTES, include_dashboard=False,
                 runtime_env=worker_runtime_env())
    else:
        _wait_until_idle(ray)
    return ray.get_runtime_context().gcs_address


def _wait_until_idle(ray, timeout: float = RAY_IDLE_WAIT_S) -> None:
    """Fail in one line, instead of hanging in placement, when an earlier test left the shared Ray's CPUs
    taken (an actor, a placement group or a task it did not end)."""
    total = ray.cluster_resources().get("CPU", 0.0)
    deadline = time.monotonic() + timeout
    while (free := ray.available_resources().get("CPU", 0.0)) < total:
        if time.monotonic() > deadline:
            pytest.fail(f"the session's Ray has {total - free:g} of {total:g} CPUs still taken {timeout:.0f}s after "
                        "the previous test: a test or stage left an actor, task or placement group behind",
                        pytrace=False)
        time.sleep(0.5)


def shutdown_ray() -> None:
    """Disconnect from (and stop, when it is ours) whatever Ray this process is connected to."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def stop_ray_after_this_folder() -> Iterator[None]:
    """For a folder whose tests run Ray Data (decorate it in the folder's conftest as a package-scoped
    autouse fixture): the local Ray is shut down when the folder is done, and the next user starts a
    fresh one.

    Why: after the real-material folder (Ray Data, then Ray Train) left its Ray up, the next folder's
    2-worker ``TorchTrainer`` waited forever with both CPUs free and no pending lease (seen twice:
    Ray 2.60, its Train controller idle after ``PlacementGroupCleaner launched``; Ray Data's
    ``_AutoscalingCoordinatorActor``, which Ray Train's controller also asks for resources, was the
    one thing left from Ray Data).  Ray Train after Ray Data within one folder works.
    """
    yield
    shutdown_ray()


@pytest.fixture
def ray_session() -> str:
    """The local Ray, up for this test (see :func:`local_ray`); its GCS address for ``RAY_ADDRESS``."""
    return local_ray()


@pytest.fixture(scope="session", autouse=True)
def _ray_down_at_the_end() -> Iterator[None]:
    yield
    shutdown_ray()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:data:`~tests.common.synthetic_data.TINY_DATA` through the REAL data stages."""
    root = tmp_path_factory.mktemp("train-data")
    return build_synthetic_data(make_params(root / "data", root / "unused"))


@pytest.fixture(scope="session")
def learn_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:data:`~tests.common.synthetic_data.LEARN_DATA` (the model that must learn) through the real data stages."""
    root = tmp_path_factory.mktemp("learn-data")
    return build_synthetic_data(learn_params(root / "data", root / "unused"))


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite backend, local artifact destination) on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    cmd = [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    # No job runners: mlflow 3.x starts ~8 huey worker processes (~250 MB each) per server for
    # features madapter never uses.
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", proc, timeout=90, log=log)
        yield uri
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def harness() -> Iterator[None]:
    """Prefect's test harness: a real, temporary Prefect API (SQLite) for the whole session.

    The server's telemetry heartbeat is switched off: there is no network here, and on a busy
    2-core machine its writes only compete with the flow runs for the SQLite lock.
    """
    from prefect.testing.utilities import prefect_test_harness

    saved = os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    try:
        with prefect_test_harness(server_startup_timeout=120):
            yield
    finally:
        if saved is None:
            os.environ.pop("PREFECT_SERVER_ANALYTICS_ENABLED", None)
        else:
            os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = saved


FINISHED_OVERRIDES = {**SMALLEST_OVERRIDES, "features": {"train_views": 1}}
"""The smallest real pipeline on the cached-features path (the default ``train.source``): one stored
training view is enough for its one epoch."""


@pytest.fixture(scope="session")
def finished_pipeline(tmp_path_factory: pytest.TempPathFactory, harness) -> tuple[Path, object]:
    """A repository copy after ONE full run of the Prefect flow (every stage through ``dvc repro
    --single-item``, data pushed to the local DVC remote), and that flow run's final state.

    Read-only: a test that changes params or re-runs stages works on :func:`copy_finished` of it.
    """
    from pipelines.flows import madapter_pipeline  # imports Prefect: only when a test needs the pipeline

    repo = copy_repo(tmp_path_factory.mktemp("finished") / "repo")
    write_params(repo, FINISHED_OVERRIDES)
    commit(repo, "the smallest params")
    started = time.monotonic()
    state = madapter_pipeline(repo_dir=str(repo), push=True, return_state=True)
    logging.getLogger(__name__).info("full pipeline through Prefect: %.0fs", time.monotonic() - started)
    return repo, state
