"""The two-worker schedule (tests/common/parallel.py): what runs together, and in which order.

The inner session collects in this process (``pytester.runpytest_inprocess --collect-only``): no
worker is started, so this stays in the unit tier; the real two-worker run is ``make test`` itself.
"""

from __future__ import annotations

import pytest

from tests.common.parallel import unit_of
from tests.common.processes import REPO

INNER = """
import pytest

@pytest.fixture(scope="session")
def finished_pipeline():
    return "repo"

@pytest.fixture(scope="module")
def cluster():
    return "ray"

def test_unit_first_in_the_file():
    pass

@pytest.mark.integration
def test_scenario():
    pass

@pytest.mark.integration
def test_uses_the_finished_pipeline(finished_pipeline):
    pass

@pytest.mark.integration
def test_starts_a_cluster(cluster):
    pass
"""


def collect(pytester: pytest.Pytester, **files: str) -> list[pytest.Item]:
    """The items of an inner session that loads the schedule plugin, in their final order."""
    pytester.makeini("[pytest]\nmarkers =\n    integration: real processes\n")
    pytester.makepyfile(**files)
    collected: list[pytest.Item] = []

    class Keep:
        @pytest.hookimpl(trylast=True)
        def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
            collected.extend(items)

    pytester.runpytest_inprocess("-p", "tests.common.parallel", "-p", "no:cacheprovider", "--collect-only",
                                 plugins=[Keep()])
    return collected


def groups(items: list[pytest.Item]) -> dict[str, list[str]]:
    return {item.name: [m.args[0] for m in item.iter_markers("xdist_group")] for item in items}


def test_integration_comes_first_and_a_shared_fixtures_module_is_one_unit(pytester: pytest.Pytester):
    items = collect(pytester, test_inner=INNER)
    assert [item.name for item in items] == [
        "test_scenario", "test_uses_the_finished_pipeline", "test_starts_a_cluster", "test_unit_first_in_the_file",
    ]
    # the whole module joins the unit of the first shared fixture it uses: it stays on one worker
    assert set(map(tuple, groups(items).values())) == {("finished_pipeline",)}, groups(items)


def test_a_module_without_shared_fixtures_is_its_own_unit(pytester: pytest.Pytester):
    plain = "import pytest\n\n@pytest.mark.integration\ndef test_a():\n    pass\n\ndef test_b():\n    pass\n"
    cluster = INNER.replace("finished_pipeline", "unshared_fixture")
    items = collect(pytester, test_plain=plain, test_cluster=cluster)
    assert groups(items) == {"test_a": [], "test_b": [], "test_scenario": ["ray-clusters"],
                             "test_uses_the_unshared_fixture": ["ray-clusters"],
                             "test_starts_a_cluster": ["ray-clusters"], "test_unit_first_in_the_file": ["ray-clusters"]}


def test_a_module_on_prefects_test_api_joins_the_finished_pipelines_unit(pytester: pytest.Pytester):
    prefect = ("import pytest\n\n@pytest.fixture(scope='session')\ndef harness():\n    yield\n\n"
               "@pytest.mark.integration\ndef test_flow(harness):\n    pass\n")
    items = collect(pytester, test_prefect=prefect, test_inner=INNER)
    assert groups(items)["test_flow"] == ["finished_pipeline"] == groups(items)["test_uses_the_finished_pipeline"]


@pytest.mark.parametrize(("nodeid", "unit"), [
    ("tests/pipeline/test_interrupt.py::test_rerun@finished_pipeline", "finished_pipeline"),
    ("tests/train/test_train_ray.py::test_resume", "tests/train/test_train_ray.py"),
    ("tests/x/test_y.py::TestZ::test_w", "tests/x/test_y.py"),
    ("tests/x/test_y.py::test_mail[a@b]", "tests/x/test_y.py"),  # an @ in a parameter id is not a group
    ("tests/x/test_y.py::test_mail[a@b]@ray-clusters", "ray-clusters"),
])
def test_a_unit_is_the_group_else_the_module(nodeid: str, unit: str):
    assert unit_of(nodeid) == unit


SHARED_FIXTURE_USERS = """
import os
import pytest

pytestmark = pytest.mark.integration

@pytest.mark.parametrize("i", range(3))
def test_uses_it(trained, i):
    pass
"""
RECORDING_CONFTEST = """
import os
import pytest

@pytest.fixture(scope="session")
def trained():
    with open(os.environ["BUILDS_FILE"], "a") as builds:
        builds.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""


@pytest.mark.integration
def test_two_real_workers_build_a_shared_session_fixture_once(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch):
    """The schedule in a real ``-n 2 --dist loadgroup`` run, not only in collection: with pytest 9.2,
    xdist silently ignored every group (pytest-xdist#1386) and the finished pipeline and the trained
    model were each built on both workers."""
    builds = pytester.path / "builds.txt"
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("BUILDS_FILE", str(builds))
    pytester.makeini("[pytest]\nmarkers =\n    integration: real processes\n")
    pytester.makeconftest(RECORDING_CONFTEST)
    plain = "def test_plain():\n    pass\n"
    pytester.makepyfile(test_a=SHARED_FIXTURE_USERS, test_b=SHARED_FIXTURE_USERS, test_c=SHARED_FIXTURE_USERS,
                        test_d=plain, test_e=plain, test_f=plain)
    result = pytester.runpytest_subprocess("-p", "tests.common.parallel", "-p", "no:cacheprovider", "-n", "2",
                                           "--dist", "loadgroup", "-v", timeout=120)
    result.assert_outcomes(passed=12)
    assert len(builds.read_text().split()) == 1, result.stdout.str()[-3000:]
    assert "test_uses_it[0]@trained" in result.stdout.str()


DIES_LEAVING_A_FORK = """
import os
import time

def test_dies_leaving_a_forked_child():
    if os.fork() == 0:  # the child holds the worker's channel to the controller, and outlives it
        time.sleep(600)
        os._exit(0)
    os._exit(1)

def test_on_another_worker():
    pass
"""


@pytest.mark.integration
def test_a_dead_worker_with_a_forked_child_left_is_reported_not_waited_for(pytester: pytest.Pytester,
                                                                           monkeypatch: pytest.MonkeyPatch):
    """Without the watch, the controller waits on the orphan's copy of the channel until the timeout."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makepyfile(test_inner=DIES_LEAVING_A_FORK)
    result = pytester.runpytest_subprocess("-p", "tests.common.parallel", "-p", "no:cacheprovider", "-n", "2",
                                           "--max-worker-restart=0", timeout=120)
    output = result.stdout.str() + result.stderr.str()
    assert "exited with status 1 while 1 process(es) it had forked kept its channel open" in output, output[-3000:]
    assert "crashed while running" in output and "test_dies_leaving_a_forked_child" in output, output[-3000:]
    assert result.ret != 0
