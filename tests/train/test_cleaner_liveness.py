"""Ray Train's placement-group cleaner must not tear down a live run because ANOTHER Ray on the machine
answers the State API, nor block on a dead one that auto-detection names
(:class:`madapter.ray_worker_setup.CleanerLivenessFix`).

Reproduced for real: the session's dashboard-less local Ray, then a second Ray on this machine whose
head serves a dashboard (started last, so auto-detection picks it).  Asked from a worker of the first,
Ray's own check reads the live actor as dead; the check the cleaner runs in our workers does not.  If
a Ray upgrade makes the first assertion fail, Ray fixed it and the patch can go.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from madapter.ray_worker_setup import CLEANER_MODULE
from tests.common.fixtures import local_ray
from tests.common.processes import free_port

pytestmark = pytest.mark.integration

FOREIGN_HEAD = """
import time
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
print(cluster.address, flush=True)
time.sleep(600)
"""


def _ask(actor_id: str) -> tuple[object, object]:
    """In a worker of the session's Ray: (Ray's check, the cleaner's check as our workers run it)."""
    import importlib

    from ray.train.v2._internal.state.util import is_actor_alive

    cleaner = importlib.import_module(CLEANER_MODULE)
    return bool(is_actor_alive(actor_id, 10)), bool(cleaner.is_actor_alive(actor_id, 10))


def _ask_with_a_stale_cluster_file(actor_id: str, ray_tmpdir: str, dead_address: str) -> str:
    """In a worker of the session's Ray, with Ray's "last cluster started here" file naming a dead cluster
    (what a ``ray start`` that is gone leaves in ``/tmp/ray/ray_current_cluster``; here under a private
    ``RAY_TMPDIR``, so that nothing else on the machine reads it): the cleaner's check, as its loop sees it."""
    import importlib
    from pathlib import Path

    from ray.util.state.exception import RayStateApiException

    cleaner = importlib.import_module(CLEANER_MODULE)
    (Path(ray_tmpdir) / "ray").mkdir(parents=True, exist_ok=True)
    (Path(ray_tmpdir) / "ray" / "ray_current_cluster").write_text(dead_address)
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = ray_tmpdir
    try:
        return "alive" if cleaner.is_actor_alive(actor_id, 10) else "dead"
    except RayStateApiException:
        return "no state api"  # the cleaner's loop logs it (filtered) and asks again a second later
    finally:
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved


def _live_controller():
    """An actor of the session's Ray that stands in for a running Train controller (alive, answering)."""
    import ray

    @ray.remote(num_cpus=0)
    class Controller:
        def ping(self) -> bool:
            return True

    controller = Controller.remote()
    assert ray.get(controller.ping.remote())
    return controller


def test_a_foreign_state_api_does_not_make_a_live_controller_dead() -> None:
    import ray

    local_ray()
    foreign = subprocess.Popen([sys.executable, "-c", FOREIGN_HEAD], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert foreign.stdout.readline().strip(), "the second Ray did not start"
        time.sleep(5)  # its dashboard comes up after the head

        controller = _live_controller()
        ask = ray.remote(num_cpus=0)(_ask)
        rays_check, cleaners_check = ray.get(ask.remote(controller._actor_id.hex()), timeout=120)
        assert rays_check is False, "Ray's own check no longer reads a foreign 'not found' as dead: drop the patch"
        assert cleaners_check is True
        ray.kill(controller)
    finally:
        os.killpg(foreign.pid, signal.SIGKILL)  # its driver and the head's GCS, raylet and dashboard
        foreign.wait(30)


def test_a_stale_cluster_file_does_not_block_the_cleaner(tmp_path) -> None:
    """Asked of a dead GCS (auto-detection reads the file), the State API waits 40 s before it fails; the
    cleaner could then not stop within its 12 s, and every Train run's shutdown waited for it and printed
    a traceback.  The check asks this worker's own cluster: an answer at once, whatever the file names."""
    import ray

    local_ray()

    controller = _live_controller()
    ask = ray.remote(num_cpus=0)(_ask_with_a_stale_cluster_file)
    try:
        answer = ray.get(ask.remote(controller._actor_id.hex(), str(tmp_path), f"127.0.0.1:{free_port()}"), timeout=20)
    finally:
        ray.kill(controller)
    assert answer in ("alive", "no state api"), answer
