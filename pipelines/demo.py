"""``make demo``: run the whole default pipeline through the Prefect flow, then say where to look.

The flow runs every DVC stage (which runs every library stage) against Prefect's local API, so
the run also appears in the Prefect UI afterwards.  The closing message is printed to the
terminal on purpose: it is this command's product, not a log line.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from rich.console import Console
from rich.markdown import Markdown

from madapter.config import ConfigError, load_params
from pipelines.dvc_stages import REPO_ROOT, dvc_command, subprocess_env
from pipelines.flows import madapter_pipeline
from pipelines.summary import collect_summary, to_markdown

logger = logging.getLogger(__name__)


def _dvc_metrics_show() -> str:
    proc = subprocess.run(
        dvc_command("metrics", "show"), cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True
    )
    return (proc.stdout or proc.stderr).rstrip()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Offline demo: no telemetry from the local Prefect server or Ray (nothing to send it to).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    console = Console()
    try:
        params = load_params(REPO_ROOT / "params.yaml")
    except ConfigError as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    started = time.monotonic()
    runs = madapter_pipeline(repo_dir=str(REPO_ROOT), push=True)
    elapsed = time.monotonic() - started

    summary = collect_summary(params, REPO_ROOT, [(r.stage, r.ran, r.seconds) for r in runs])
    console.rule(f"madapter demo finished in {elapsed / 60:.1f} min")
    console.print(Markdown(to_markdown(summary)))
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
                "Prefect UI (this flow run, its task runs and the summary artifact):",
                "  .venv/bin/prefect server start   then open http://127.0.0.1:4200",
                "DVC:  .venv/bin/dvc metrics show | dvc plots show | dvc dag | dvc exp run -S train.lr=3e-4",
                "Predict a video:  .venv/bin/python -m madapter predict VIDEO.mp4 "
                f"--model models:/{name}@{alias}",
            ]
        ),
        soft_wrap=True,
    )
    console.rule("dvc metrics show")
    console.print(_dvc_metrics_show(), soft_wrap=True, markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
