"""``make demo``: run the whole default pipeline through the Prefect flow (and ``dvc push`` its
outputs to the default DVC remote), train the order-blind baseline on the same cached features
(:mod:`pipelines.baseline`), then say where to look.

The flow runs every DVC stage (which runs every library stage) against Prefect's local API, so
the run also appears in the Prefect UI afterwards.  The terminal shows a line when each stage
starts and ends (with its one-line result), the training epochs and the warnings
(:mod:`pipelines.console`); each stage's whole output is in ``outputs/logs/<stage>.log`` and in the
Prefect task run's logs.  The closing message is printed to the terminal on purpose: it is this
command's product, not a log line.

Ctrl-C ends everything within seconds and prints one line saying where to resume:

* the local Prefect API server runs in its own process group (:mod:`pipelines.prefect_server`),
  so the terminal's SIGINT does not kill it under the flow: the flow records its crash, Prefect's
  log and event workers drain, and only then is the server stopped (a server killed first made
  the flow engine retry against it, and hang, at exit);
* the running stage is stopped by :func:`pipelines.dvc_stages.stop_stage` (SIGINT to its process
  group, waited for with a deadline), which also stops Ray;
* SIGTERM and SIGHUP (closed terminal) take the same path, so the server never outlives us.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from prefect.exceptions import TerminationSignal
from rich.console import Console
from rich.markdown import Markdown

from madapter.config import ConfigError, Params, load_params
from pipelines.baseline import baseline_overrides, run_baseline
from pipelines.dvc_stages import REPO_ROOT
from pipelines.flows import madapter_pipeline
from pipelines.prefect_server import local_prefect_api
from pipelines.summary import collect_summary, to_markdown

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# ----------------------------------------------------------------------------- interrupts
class StopRequest:
    """Signal handler: the first SIGINT/SIGTERM/SIGHUP raises KeyboardInterrupt in the main thread.

    Later ones are logged and ignored: stopping is already under way and bounded (the stage gets
    SIGTERM/SIGKILL after a deadline), and an interrupt inside that cleanup could leave the stage
    or the Prefect server running.  (While a flow runs, Prefect turns SIGTERM into its own
    ``TerminationSignal`` first and re-sends it to this handler once the flow has crashed.)
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            raise KeyboardInterrupt
        logger.warning(
            "%s: already stopping after %s, please wait a few seconds",
            signal.Signals(signum).name,
            self.received.name,
        )

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self)

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a command that a signal stopped (130 for Ctrl-C)."""
        return 128 + int(self.received or signal.SIGINT)


def interrupted_stage(interrupt: BaseException | None) -> str | None:
    """The stage an interrupt stopped (``stage`` set by :func:`pipelines.dvc_stages.run_dvc_stage`
    on the exception, or on one it was raised while handling), or None outside any stage."""
    seen = 0
    while interrupt is not None and seen < 10:
        if stage := getattr(interrupt, "stage", None):
            return stage
        interrupt, seen = interrupt.__cause__ or interrupt.__context__, seen + 1
    return None


RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"
"""Ray Train's record of the checkpoints it committed: the latest one is what the next run restores."""


def _newest_ray_run(params: Params, repo: Path) -> Path | None:
    """The Ray run directory of ``train.run_name`` written to last (the one just interrupted)."""
    storage = Path(params.train.storage_path)
    storage = storage if storage.is_absolute() else repo / storage
    runs = [d for d in storage.glob(f"{params.train.run_name}-*") if d.is_dir()]
    if not runs:
        return None
    return max(
        runs, key=lambda d: max((f.stat().st_mtime for f in d.rglob("*.json")), default=d.stat().st_mtime)
    )


def ray_resume_point(params: Params, repo: Path) -> tuple[int, Path] | None:
    """(epoch, directory) of the checkpoint Ray Train restores when training starts again, if any.

    Read from Ray's snapshot, not from the newest ``epoch-*`` directory: Ray commits a reported
    checkpoint a little after the worker wrote it, and an interrupt can land in between.
    """
    run = _newest_ray_run(params, repo)
    if run is None or not (run / RAY_SNAPSHOT).is_file():
        return None
    try:
        latest = json.loads((run / RAY_SNAPSHOT).read_text())["latest_checkpoint_result"]
        name = latest["checkpoint_dir_name"]
        epoch = int(latest.get("metrics", {}).get("epoch") or name.rsplit("-", 1)[-1])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        logger.debug("%s: unreadable Ray snapshot", run / RAY_SNAPSHOT, exc_info=True)
        return None
    return epoch, run / name


def resume_hint(params: Params, repo: Path, stage: str | None) -> str:
    """The one line printed after an interrupt: where it stopped and what ``make demo`` does next."""
    if stage is None:
        return "interrupted; run `make demo` again to resume: stages already finished are skipped"
    if stage == "train":
        checkpoint = ray_resume_point(params, repo)
        if checkpoint is None:
            return "interrupted during train, before its first epoch checkpoint; run `make demo` again to start training over"
        epoch, path = checkpoint
        shown = path.relative_to(repo) if path.is_relative_to(repo) else path
        return (
            "interrupted during train; run `make demo` again to resume from the last epoch checkpoint "
            f"(epoch {epoch}/{params.train.epochs}, {shown})"
        )
    return f"interrupted during {stage}; run `make demo` again to resume: finished stages are skipped, {stage} starts over"


# ----------------------------------------------------------------------------- the demo
def _print_closing(console: Console, params: Params, runs: list, elapsed: float) -> None:
    baseline_dir = Path(baseline_overrides(params, REPO_ROOT)["base.outputs_dir"])
    summary = collect_summary(params, REPO_ROOT, [(r.stage, r.ran, r.seconds) for r in runs], baseline_dir)
    console.rule(f"madapter demo finished in {elapsed / 60:.1f} min")
    console.print(Markdown(to_markdown(summary, details=False)))
    console.rule("where to look")
    reg = summary.registration
    name, alias = reg.get("model_name", params.register.model_name), reg.get("alias", "champion")
    console.print(
        "\n".join(
            [
                f"MLflow UI (runs, metrics, plots, registry):  {summary.mlflow_ui_command}",
                f"  then open {summary.run_url or 'http://127.0.0.1:5000'}",
                f"Registered model:  {name} version {reg.get('version', '?')}, alias '{alias}'"
                f"  -> models:/{name}@{alias}",
                "Metrics:  outputs/evaluate/metrics.json   plots: outputs/evaluate/, outputs/train/",
                "Logs of every stage:  outputs/logs/<stage>.log (and the Prefect task runs)",
                "Prefect UI (this flow run, its task runs and the summary artifact):",
                "  .venv/bin/prefect server start   then open http://127.0.0.1:4200",
                "DVC:  .venv/bin/dvc metrics show | dvc plots show | dvc dag | dvc exp run -S train.lr=3e-4",
                "Predict a video:  .venv/bin/python -m madapter predict VIDEO.mp4 "
                f"--model models:/{name}@{alias}",
            ]
        ),
        soft_wrap=True,
    )


def main() -> int:
    """Run the demo; the exit code is 0, 2 for a bad params.yaml, 128 + the signal when interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Importing Prefect gave the root logger its console handler at WARNING (so basicConfig above
    # was a no-op): the demo's own lines (the baseline's start, epochs and result) are INFO.
    logging.getLogger("pipelines").setLevel(logging.INFO)
    # Offline demo: no telemetry from the local Prefect server or Ray (nothing to send it to).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    console = Console()
    try:
        params = load_params(REPO_ROOT / "params.yaml")
    except ConfigError as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    stop = StopRequest()
    stop.install()
    started = time.monotonic()
    try:
        with local_prefect_api():
            runs = madapter_pipeline(repo_dir=str(REPO_ROOT), push=True)
        run_baseline(params, REPO_ROOT)
        _print_closing(console, params, runs, time.monotonic() - started)
    except (KeyboardInterrupt, TerminationSignal) as interrupt:
        hint = resume_hint(params, REPO_ROOT, interrupted_stage(interrupt))
        Console(stderr=True).print(hint, soft_wrap=True, markup=False, highlight=False)
        return stop.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
