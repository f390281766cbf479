"""How ``make test`` runs on two pytest-xdist workers without building anything twice or changing a test.

``make test`` is ``pytest -n 2 --dist loadgroup``.  Measured on the 2-core machine, one serial run
left a core idle about a third of the time: the integration scenarios wait on Ray placement,
servers starting, subprocess pipelines and polling.  Two workers fill that, as long as:

* **a module stays on one worker** (its module fixtures -- a trained model, a 4-trial sweep, the
  real-material pipeline -- are built once): the unit of work is the module, not the test, as with
  ``--dist loadscope``;
* **the modules that reuse one expensive session fixture share a worker**: every module that uses
  a fixture of :data:`WORKER_SHARED_FIXTURES` goes into one unit named after it (the finished
  pipeline, the trained model); likewise the modules that start a multi-node Ray cluster (one at a
  time on the machine, as in a serial run);
* **the long scenarios start first**: units are handed out in collection order, and
  :func:`pytest_collection_modifyitems` puts integration modules before unit modules (stable
  otherwise), so the many short unit tests fill in at the end instead of a 3-minute scenario
  starting last on one worker while the other is idle.

Run serially (no ``-n``), nothing here changes anything but the order: integration first.
"""

from __future__ import annotations

import pytest

WORKER_SHARED_FIXTURES = ("finished_pipeline", "trained", "cluster", "two_node_ray", "credential_free_ray")
"""Fixtures whose users run on one worker: a module that uses one joins the unit named after it.

``finished_pipeline`` (a minute of Prefect + DVC + Ray Train, its flow-run state in that worker's
Prefect API) and ``trained`` (features + a 2-worker run) are session fixtures, built once per
worker: all their users belong together.  The cluster fixtures (tests/multinode, tests/data_video,
tests/infra) each start a multi-node Ray on this machine: one at a time, as in a serial run."""

CLUSTERS = ("cluster", "two_node_ray", "credential_free_ray")


def _unit_name(fixture: str) -> str:
    return "ray-clusters" if fixture in CLUSTERS else fixture


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration modules first (a stable sort); every test of a module that uses a shared fixture
    gets that fixture's unit (the whole module: its module fixtures are then built once).

    ``tryfirst``: xdist's worker turns ``xdist_group`` marks into node-id suffixes in its own
    hook of the same name, which must see the marks added here.
    """
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)
    units: dict[str, str] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        used = [name for name in WORKER_SHARED_FIXTURES if name in getattr(item, "fixturenames", ())]
        if used and module not in units:
            units[module] = _unit_name(used[0])
    for item in items:
        if (unit := units.get(item.nodeid.split("::", 1)[0])) is not None:
            item.add_marker(pytest.mark.xdist_group(unit))


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its shared fixture's group, which xdist appends to the
    node id as ``@group`` (a ``@`` inside a parametrize id, before the ``]``, is not one), else its module."""
    if nodeid.rfind("@") > nodeid.rfind("]"):
        return nodeid.rsplit("@", 1)[-1]
    return nodeid.split("::", 1)[0]


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_ModuleScheduling(), "madapter-module-scheduling")


class _ModuleScheduling:
    """The xdist hook, registered only when xdist is installed (its import is optional)."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log):
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadGroupScheduling

        class ModuleOrGroupScheduling(LoadGroupScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return unit_of(nodeid)

        config.option.loadscopereorder = False  # keep the order made above: long scenarios first
        return ModuleOrGroupScheduling(config, log)
