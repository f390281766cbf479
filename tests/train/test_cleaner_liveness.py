"""Ray Train's placement-group cleaner must not tear down a live run because ANOTHER Ray on the machine
answers the State API (:class:`madapter.ray_worker_setup.CleanerLivenessFix`).

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

from tests.common.fixtures import local_ray

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

    cleaner = importlib.import_module("ray.train.v2._internal.execution.controller.placement_group_cleaner")
    return bool(is_actor_alive(actor_id, 10)), bool(cleaner.is_actor_alive(actor_id, 10))


def test_a_foreign_state_api_does_not_make_a_live_controller_dead() -> None:
    import ray

    local_ray()
    foreign = subprocess.Popen([sys.executable, "-c", FOREIGN_HEAD], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert foreign.stdout.readline().strip(), "the second Ray did not start"
        time.sleep(5)  # its dashboard comes up after the head

        @ray.remote(num_cpus=0)
        class Controller:
            def ping(self) -> bool:
                return True

        controller = Controller.remote()
        assert ray.get(controller.ping.remote())
        ask = ray.remote(num_cpus=0)(_ask)
        rays_check, cleaners_check = ray.get(ask.remote(controller._actor_id.hex()), timeout=120)
        assert rays_check is False, "Ray's own check no longer reads a foreign 'not found' as dead: drop the patch"
        assert cleaners_check is True
        ray.kill(controller)
    finally:
        os.killpg(foreign.pid, signal.SIGKILL)  # its driver and the head's GCS, raylet and dashboard
        foreign.wait(30)
