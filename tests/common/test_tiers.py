"""The tier guard (tests/common/tiers.py): an unmarked test that starts a process fails with one line.

The inner sessions run in this process (``pytester.runpytest_inprocess``): their guard records the
inner tests' process starts, not this test's, so this module stays in the unit tier.
"""

from __future__ import annotations

import sys
import types

import pytest

INNER = """
import subprocess
import pytest

@pytest.fixture
def server():
    subprocess.run(["true"], check=True)
    yield

@pytest.fixture(scope="module")
def module_server():
    yield
    subprocess.run(["true", "module-teardown"], check=True)

def test_unmarked_starts_a_process():
    subprocess.run(["true", "direct"], check=True)

def test_unmarked_through_a_fixture(server):
    pass

@pytest.mark.integration
def test_marked_starts_a_process(server):
    subprocess.run(["true", "marked"], check=True)

def test_unmarked_pure(module_server):
    assert sum([1, 2]) == 3

def test_unmarked_ldconfig_is_allowed():
    subprocess.run(["ldconfig", "-p"], capture_output=True)
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n    integration: real processes\n")
    pytester.makepyfile(test_inner=INNER)
    return pytester


def failures(result: pytest.RunResult) -> dict[str, list[str]]:
    """Each failed test's report lines (between its ``____ name ____`` header and the next)."""
    sections: dict[str, list[str]] = {}
    name = None
    for line in result.outlines:
        if line.startswith("_") and line.endswith("_") and " " in line.strip("_"):
            name = line.strip("_ ")
            sections[name] = []
        elif line.startswith("="):
            name = None
        elif name is not None:
            sections[name].append(line)
    return sections


def test_an_unmarked_process_start_fails_with_one_line_and_the_rest_pass(inner: pytest.Pytester):
    result = inner.runpytest_inprocess("-p", "tests.common.tiers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=2)
    fix = "mark the module `pytestmark = pytest.mark.integration`"
    reports = failures(result)
    assert sorted(reports) == ["test_unmarked_starts_a_process", "test_unmarked_through_a_fixture"]
    # One line each, naming the command (started by the test, or by a fixture it requested).
    [direct] = reports["test_unmarked_starts_a_process"]
    assert direct.startswith("unit test started `true direct`: ") and fix in direct
    [fixture] = reports["test_unmarked_through_a_fixture"]
    assert fixture.startswith("unit test started `true`: ") and fix in fixture
    # A module fixture torn down after the last (pure) test is not that test's process start.
    assert "module-teardown" not in result.stdout.str()


def test_marking_the_module_makes_them_pass(inner: pytest.Pytester):
    inner.makepyfile(test_inner="import pytest\npytestmark = pytest.mark.integration\n" + INNER)
    result = inner.runpytest_inprocess("-p", "tests.common.tiers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_a_ray_already_running_counts(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """A Ray left up by an earlier integration test starts no process: finding it is flagged too."""
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: True
    fake.init = lambda *args, **kwargs: None
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr("tests.common.tiers._RAY_PATCHED", False)
    inner.makepyfile(test_inner="""
import ray

def test_uses_the_running_ray():
    assert ray.is_initialized()

def test_calls_ray_init():
    ray.init(address="local")

def test_pure():
    pass
""")
    result = inner.runpytest_inprocess("-p", "tests.common.tiers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    reports = failures(result)
    [running] = reports["test_uses_the_running_ray"]
    assert running.startswith("unit test found Ray running: `ray.is_initialized()` was True: ")
    [init] = reports["test_calls_ray_init"]
    assert init.startswith("unit test started Ray: `ray.init(address='local')`: ")
