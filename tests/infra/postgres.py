"""A throwaway PostgreSQL server for the infra tests: the Debian binaries, a temp cluster, 127.0.0.1.

Why not a container: there is no Docker engine on the test machines, but PostgreSQL is a Debian
package (``scripts/setup-system.sh`` installs it when missing, as ``make test`` runs it).  The
server runs exactly as the compose stack's does for MLflow and Prefect: TCP on a loopback port,
password (SCRAM) authentication, the databases of ``infra/postgres-init.sql``.

``initdb`` and ``postgres`` refuse to run as root.  Tests run as root on CI containers, so the
server then runs as the unprivileged ``postgres`` account the Debian package creates (its data
directory is made in ``/tmp`` and handed to that user: pytest's own temp dirs are private to
root).  As any other user it simply runs as that user.  Durability is switched off (``fsync``,
``synchronous_commit``, ``full_page_writes``): the data lives for one test session, and MLflow's
and Prefect's schema migrations are several times faster without it.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SETUP_HINT = "run `bash scripts/setup-system.sh` (what `make test` runs) to install the Debian package 'postgresql'"
SERVICE_USER = "postgres"
"""The account the Debian package creates; the server runs as it when the tests run as root."""


@dataclass(frozen=True)
class PgServer:
    """A running server: connection details plus what is needed to stop it."""

    host: str
    port: int
    user: str
    password: str
    bindir: Path
    datadir: Path
    process: subprocess.Popen

    def url(self, database: str, driver: str = "postgresql") -> str:
        """SQLAlchemy URL of ``database`` (``driver`` e.g. ``postgresql+asyncpg`` for Prefect)."""
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def psql(self, *args: str) -> subprocess.CompletedProcess:
        """Run ``psql`` against the server as the superuser (stops on the first SQL error)."""
        cmd = [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p",
               str(self.port), "-U", self.user, "-d", "postgres", *args]
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"}
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)


def postgres_bindir() -> Path:
    """Where ``initdb``/``postgres``/``psql`` live: ``$PATH`` first, else Debian's newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian keeps the server binaries off ``$PATH``)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError(f"PostgreSQL server binaries (initdb) not found on PATH or in /usr/lib/postgresql; {SETUP_HINT}")
    return Path(found[-1]).parent


def _service_user() -> pwd.struct_passwd | None:
    """The account to run the server as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise RuntimeError(f"running as root, and initdb refuses root, but there is no '{SERVICE_USER}' user; "
                           f"{SETUP_HINT}") from None


def _run_as(account: pwd.struct_passwd | None) -> dict:
    """``subprocess`` arguments that drop to ``account`` (nothing when it is None)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def start_postgres(port: int, password: str, user: str = "madapter", timeout: float = 120.0) -> PgServer:
    """initdb a fresh cluster in a temp dir and start ``postgres`` on 127.0.0.1:``port``; wait until
    it accepts password logins.  Stop it with :func:`stop_postgres`."""
    bindir = postgres_bindir()
    account = _service_user()
    datadir = Path(tempfile.mkdtemp(prefix="madapter-pg-"))
    pwfile = datadir / "pwfile"
    pwfile.write_text(password + "\n")
    cluster = datadir / "data"
    if account is not None:
        os.chown(datadir, account.pw_uid, account.pw_gid)
        os.chown(pwfile, account.pw_uid, account.pw_gid)
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    if account is not None:
        env["HOME"] = str(datadir)
    initdb = [str(bindir / "initdb"), "-D", str(cluster), "-U", user, f"--pwfile={pwfile}", "-A", "scram-sha-256",
              "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
    done = subprocess.run(initdb, env=env, cwd=datadir, capture_output=True, text=True, timeout=timeout,
                          **_run_as(account))
    if done.returncode != 0:
        shutil.rmtree(datadir, ignore_errors=True)
        raise RuntimeError(f"initdb failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    pwfile.unlink()
    log = datadir / "postgres.log"
    server = [str(bindir / "postgres"), "-D", str(cluster), "-h", "127.0.0.1", "-p", str(port), "-k", str(datadir),
              "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
              "-c", "max_connections=200"]
    with open(log, "w") as out:
        if account is not None:
            os.chown(log, account.pw_uid, account.pw_gid)
        process = subprocess.Popen(server, env=env, cwd=datadir, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, **_run_as(account))
    pg = PgServer("127.0.0.1", port, user, password, bindir, datadir, process)
    _wait_ready(pg, timeout, log)
    logger.info("PostgreSQL %s on 127.0.0.1:%d (data %s)", bindir.parent.name, port, cluster)
    return pg


def _wait_ready(pg: PgServer, timeout: float, log: Path) -> None:
    """Poll with a real login (``psql -c 'select 1'``) until the server answers, dies or times out."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if pg.process.poll() is not None:
            stop_postgres(pg, remove=False)
            raise RuntimeError(f"postgres exited with {pg.process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            pg.psql("-c", "select 1")
            return
        except subprocess.CalledProcessError as err:
            last = err.stderr.strip()
        time.sleep(0.5)
    stop_postgres(pg)
    raise RuntimeError(f"postgres on port {pg.port} not ready within {timeout:.0f}s ({last}):\n{log.read_text()[-3000:]}")


def stop_postgres(pg: PgServer, remove: bool = True) -> None:
    """Fast shutdown (SIGINT: roll back sessions, close), SIGKILL if it hangs; then delete the data."""
    if pg.process.poll() is None:
        pg.process.send_signal(signal.SIGINT)
        try:
            pg.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(pg.process.pid, signal.SIGKILL)
            pg.process.wait(30)
    if remove:
        shutil.rmtree(pg.datadir, ignore_errors=True)
