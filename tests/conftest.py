"""What every test folder shares: ONE local Ray per pytest session.

Ray allows one ``ray.init`` per process, and several folders (features, features_train, train,
tune) need a Ray; each used to start its own, which failed as soon as the folders ran in one
session.  This fixture starts it on first use and shuts it down at the end of the session.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray of 2 CPUs (the machine's), small object store, no dashboard, the stages' job env."""
    import ray

    from madapter.ray_runtime import worker_runtime_env

    if ray.is_initialized():  # started by the code under test itself: use it as it is
        yield
        return
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, runtime_env=worker_runtime_env())
    yield
    ray.shutdown()
