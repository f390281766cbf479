"""The two-worker schedule (tests/common/parallel.py): what runs together, and in which order.

The inner session collects in this process (``pytester.runpytest_inprocess --collect-only``): no
worker is started, so this stays in the unit tier; the real two-worker run is ``make test`` itself.
"""

from __future__ import annotations

import pytest

from tests.common.parallel import unit_of

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


def test_integration_comes_first_and_shared_fixture_users_are_grouped(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nmarkers =\n    integration: real processes\n")
    pytester.makepyfile(test_inner=INNER)
    collected: list[pytest.Item] = []

    class Keep:
        @pytest.hookimpl(trylast=True)
        def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
            collected.extend(items)

    pytester.runpytest_inprocess("-p", "tests.common.parallel", "-p", "no:cacheprovider", "--collect-only",
                                 plugins=[Keep()])
    assert [item.name for item in collected] == [
        "test_scenario", "test_uses_the_finished_pipeline", "test_starts_a_cluster", "test_unit_first_in_the_file",
    ]
    groups = {item.name: [m.args[0] for m in item.iter_markers("xdist_group")] for item in collected}
    assert groups == {"test_scenario": [], "test_uses_the_finished_pipeline": ["finished_pipeline"],
                      "test_starts_a_cluster": ["ray-clusters"], "test_unit_first_in_the_file": []}


@pytest.mark.parametrize(("nodeid", "unit"), [
    ("tests/pipeline/test_interrupt.py::test_rerun@finished_pipeline", "finished_pipeline"),
    ("tests/train/test_train_ray.py::test_resume", "tests/train/test_train_ray.py"),
    ("tests/x/test_y.py::TestZ::test_w", "tests/x/test_y.py"),
    ("tests/x/test_y.py::test_mail[a@b]", "tests/x/test_y.py"),  # an @ in a parameter id is not a group
    ("tests/x/test_y.py::test_mail[a@b]@ray-clusters", "ray-clusters"),
])
def test_a_unit_is_the_group_else_the_module(nodeid: str, unit: str):
    assert unit_of(nodeid) == unit
