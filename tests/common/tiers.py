"""The two test tiers, enforced: a test that starts a process must be marked ``integration``.

The unit tier (``make test-fast``, ``pytest -m "not integration"``) is the tests that start no Ray, no
server and no subprocess pipeline.  Markers are not trusted to say so: this plugin watches what every
test really starts and FAILS a test without the ``integration`` marker that starts a process, directly
or through a fixture it triggers, with one line naming the command and the marker to add.

How it sees process starts: ONE ``sys.addaudithook`` hook per interpreter (audit hooks cannot be
removed) that records, against the test currently in setup / call / teardown, the audit events
``subprocess.Popen`` (every ``subprocess.run`` / ``check_output`` / ``Popen``, and every process
``ray.init`` starts: gcs_server, raylet, dashboard, monitors), ``os.system``, ``os.posix_spawn`` /
``os.posix_spawnp``, ``os.spawn``, ``os.exec`` and ``os.forkpty`` (checked on CPython 3.11).
``os.fork`` is seen too, and allowed (below).  ``multiprocessing`` / ``torch.multiprocessing`` with
the "spawn" or "forkserver" start method raise no audit event (CPython starts them through
``_posixsubprocess.fork_exec``), and they are allowed as well: they are the unit's OWN worker
pools running the test's own code (the scan stage's probe processes, the decode stage's
``ProcessPoolExecutor``, a two-rank ``torch.distributed`` check), no other program and no service.

Ray already up: an earlier integration test may have left a Ray running in this process (a session or
package fixture), and an unmarked test using it would start no process.  So, once ``ray`` is imported,
``ray.init`` and ``ray.is_initialized`` are wrapped (module attributes, which Ray's own auto-init of
``ray.get`` / ``ray.put`` / tasks / Ray Data goes through): an unmarked test that calls ``ray.init``
or finds ``ray.is_initialized()`` true (on the main thread) fails the same way.  A Ray handle reached
some other way is caught at least by ``-m "not integration"``, where no Ray is ever up.

Not attributed to a test: process starts while a module / package / session fixture is TORN DOWN
(it runs in the teardown of whichever test happens to be last in its scope; its setup, which is
where it starts its processes, was attributed to the test that first requested it), and anything
outside a test (collection, imports at collection time, session start and end).

The allowlist, kept tiny on purpose (each entry is quick and starts no service):

* ``os.fork`` -- ``multiprocessing`` "fork" workers and ``torch.utils.data.DataLoader`` workers:
  a copy of this interpreter running the test's own code, no new program, started in milliseconds
  (multiprocessing "spawn" workers: see above).
* ``ldconfig`` -- ``ctypes.util.find_library`` runs ``ldconfig -p`` when a library (torch, PyAV,
  decord, ...) is first imported inside a test instead of at collection; a few milliseconds.
* ``git`` -- MLflow (through GitPython) runs ``git version`` / ``git rev-parse`` / ``git check-ignore``
  the first time a run or model is logged in the process, so without it whichever in-process MLflow
  test (a local SQLite store, no server) came first would be flagged; local, milliseconds.
* ``uname`` -- ``platform.platform()`` runs ``uname -p`` once per process (``mlflow.telemetry``
  calls it when first imported, often inside a test); same first-caller-only problem, milliseconds.
* ``nvidia-smi`` -- ``madapter.gpu_diagnosis`` runs one read-only query (short timeout) to name the
  GPU and driver when CUDA is refused; unit tests of that refusal put a fake one on ``PATH``.

Not allowed, however short: ``python -m madapter`` / ``pipelines`` / any Python subprocess (a new
interpreter importing torch is seconds, and it is the CLI, not a unit), ``dvc``, ``mlflow``,
``prefect``, ``docker-compose``, ``unar`` / ``unrar``, Ray.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
import threading
from collections.abc import Generator
from typing import Any

import pytest

MARKER = "integration"
FIX = "mark the module `pytestmark = pytest.mark.integration` (or the test @pytest.mark.integration)"

# Programs a unit test may start: see the module docstring for why each is here.
ALLOWED_PROGRAMS = frozenset({"ldconfig", "git", "uname", "nvidia-smi"})
# Audit events that start a process ("os.fork" is allowed: see the module docstring).
PROCESS_EVENTS = frozenset({
    "subprocess.Popen", "os.system", "os.posix_spawn", "os.posix_spawnp", "os.spawn", "os.exec",
    "os.forkpty",
})
MAX_COMMAND = 160

_GUARDS: list[TierGuard] = []  # one per pytest session in this process; the innermost one records
_HOOK_INSTALLED = False
_RAY_PATCHED = False


def _argv(event: str, args: tuple) -> list[str]:
    """The command line of a process-start audit event."""
    def strs(seq: Any) -> list[str]:
        if isinstance(seq, (str, bytes, os.PathLike)):
            return [os.fsdecode(seq)]
        return [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in seq or ()]

    if event == "subprocess.Popen":  # (executable, args, cwd, env)
        return strs(args[1]) or strs(args[0])
    if event == "os.system":  # (command,)
        return ["sh", "-c", os.fsdecode(args[0])]
    if event in ("os.posix_spawn", "os.posix_spawnp", "os.exec"):  # (path, argv, env)
        return strs(args[1]) or strs(args[0])
    if event == "os.spawn":  # (mode, path, args, env)
        return strs(args[2]) or strs(args[1])
    return [event]


def _program(argv: list[str]) -> str:
    """The program a command runs (the first word after ``sh -c``)."""
    if len(argv) >= 3 and os.path.basename(argv[0]) in ("sh", "bash") and argv[1] == "-c":
        words = argv[2].split()
        return os.path.basename(words[0]) if words else ""
    return os.path.basename(argv[0]) if argv else ""


def _short(text: str) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_COMMAND else text[: MAX_COMMAND - 3] + "..."


def _show(argv: list[str]) -> str:
    if argv and os.path.isabs(argv[0]):
        argv = [os.path.basename(argv[0]), *argv[1:]]
    return _short(shlex.join(argv))


def _audit(event: str, args: tuple) -> None:
    if event not in PROCESS_EVENTS or not _GUARDS:
        return
    try:
        argv = _argv(event, args)
    except Exception:  # an audit hook must never break the audited call
        argv = [event]
    if _program(argv) in ALLOWED_PROGRAMS:
        return
    _GUARDS[-1].record(f"started `{_show(argv)}`")


def _install_audit_hook() -> None:
    global _HOOK_INSTALLED
    if not _HOOK_INSTALLED:
        sys.addaudithook(_audit)
        _HOOK_INSTALLED = True


def _patch_ray() -> None:
    """Wrap ``ray.init`` / ``ray.is_initialized`` once ``ray`` is imported (never import it here)."""
    global _RAY_PATCHED
    ray = sys.modules.get("ray")
    if _RAY_PATCHED or ray is None:
        return
    init, is_initialized = getattr(ray, "init", None), getattr(ray, "is_initialized", None)
    if init is None or is_initialized is None:  # still being imported
        return

    @functools.wraps(init)
    def init_seen(*args: Any, **kwargs: Any) -> Any:
        if _GUARDS and threading.current_thread() is threading.main_thread():
            shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
            _GUARDS[-1].record(f"started Ray: `{_short(f'ray.init({shown})')}`")
        return init(*args, **kwargs)

    @functools.wraps(is_initialized)
    def is_initialized_seen() -> bool:
        up = is_initialized()
        if up and _GUARDS and threading.current_thread() is threading.main_thread():
            _GUARDS[-1].record("found Ray running: `ray.is_initialized()` was True")
        return up

    ray.init, ray.is_initialized = init_seen, is_initialized_seen
    _RAY_PATCHED = True


class TierGuard:
    """One pytest session's record: process starts by test and phase."""

    def __init__(self) -> None:
        self.item: pytest.Item | None = None
        self.phase: str | None = None
        self.events: dict[str, list[str]] = {}
        self.fixture_teardowns = 0  # > 0 while a module/package/session fixture is torn down

    def record(self, what: str) -> None:
        """``what`` the running test did: "started `COMMAND`", "started Ray: ...", ..."""
        if self.item is None or self.phase is None or self.fixture_teardowns:
            return
        seen = self.events.setdefault(self.phase, [])
        if what not in seen:
            seen.append(what)

    def _phase(self, item: pytest.Item, phase: str) -> Generator[None]:
        _patch_ray()
        self.item, self.phase = item, phase
        try:
            yield
        finally:
            self.phase = None

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        self.events = {}
        try:
            return (yield)
        finally:
            self.item, self.phase, self.events = None, None, {}

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        yield from self._phase(item, "setup")

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        yield from self._phase(item, "call")

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, None, None]:
        yield from self._phase(item, "teardown")

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest
                             ) -> Generator[None, object, object]:
        result = yield
        if fixturedef.scope != "function":
            # Finalizers run last-in first-out: this one runs just BEFORE the fixture's own teardown,
            # and pytest_fixture_post_finalizer (registered first) just after it.
            def begin() -> None:
                fixturedef._tiers_tearing_down = True  # type: ignore[attr-defined]
                self.fixture_teardowns += 1
            fixturedef.addfinalizer(begin)
        return result

    def pytest_fixture_post_finalizer(self, fixturedef: pytest.FixtureDef) -> None:
        if getattr(fixturedef, "_tiers_tearing_down", False):
            fixturedef._tiers_tearing_down = False  # type: ignore[attr-defined]
            self.fixture_teardowns -= 1

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo
                                  ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if item.get_closest_marker(MARKER) is not None:
            return report
        if call.when == "setup":
            started = [] if report.passed else self.events.get("setup", [])  # passed: told at "call"
        elif call.when == "call":
            started = self.events.get("setup", []) + self.events.get("call", [])
        else:
            started = self.events.get("teardown", [])
        if not started:
            return report
        more = f" (+{len(started) - 1} more)" if len(started) > 1 else ""
        line = f"unit test {started[0]}{more}: the unit tier starts no Ray, server or subprocess; {FIX}"
        if len(started) > 1:
            report.sections.append(("tiers: everything it started", "\n".join(started)))
        if report.failed:
            report.sections.append(("tiers", line))
        else:
            report.outcome = "failed"
            report.longrepr = line
            if hasattr(report, "wasxfail"):
                del report.wasxfail
        return report


def pytest_configure(config: pytest.Config) -> None:
    _install_audit_hook()
    guard = TierGuard()
    config.stash[_GUARD_KEY] = guard
    config.pluginmanager.register(guard, "tiers-guard")
    _GUARDS.append(guard)


def pytest_unconfigure(config: pytest.Config) -> None:
    guard = config.stash.get(_GUARD_KEY, None)
    if guard is not None and guard in _GUARDS:
        _GUARDS.remove(guard)


_GUARD_KEY = pytest.StashKey[TierGuard]()
