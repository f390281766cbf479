"""What a stage shows on the terminal (unit tier: no process is started).

Every line a stage prints goes to its log file and to the full log (the Prefect task run's logs);
the terminal gets its start, its end with a one-line result, its epochs and its warnings; a stage
result is summarised, never ``repr``'d (a train result's ``repr`` was one 22,589-character line).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from madapter.config import params_from_dict
from madapter.stage_summary import EPOCH_LINES, epoch_is_logged, epoch_line, summarize
from pipelines.console import MAX_LINE, StageOutput, StatusLine, console_line, stage_log_path

RECORD = {"epoch": 33, "train_loss": 0.61234, "train_acc": 0.98611, "val_loss": 0.70121, "val_acc": 0.93333,
          "val_top5": 1.0, "val_mean_class_acc": 0.9333, "clips_per_s": 1234.5, "peak_memory_mb": 123.4,
          "epoch_time_s": 1.2, "val_time_s": 0.3, "lr": 0.003}

# What a train stage printed before: DVC, the CLI, Ray's forwarded worker lines, a tqdm refresh.
TRAIN_OUTPUT = [
    "Running stage 'train':",
    "> python -m madapter train",
    "02:11:10 INFO madapter.cli: stage train: start (dataset=synthetic)",
    "2026-12-07 02:11:11,123\tINFO worker.py:1888 -- Started a local Ray instance.",
    "(RayTrainWorker pid=4242) 02:11:12 INFO madapter.train.source: training the madapter head on cached features",
    "(RayTrainWorker pid=4242) Checkpoint successfully created at: Checkpoint(filesystem=local, path=/x/epoch-0001)",
    f"(RayTrainWorker pid=4242) 02:11:13 INFO madapter.train.loop: {epoch_line(RECORD, 60)}",
    "(RayTrainWorker pid=4242) 02:11:14 INFO madapter.train.loop: resuming run demo after epoch 32 (MLflow run ab)",
    "(RayTrainWorker pid=4242) epoch 34/60:   7%|▋         | 6/90 [00:00<00:05, 15.2it/s]",
    "02:11:15 WARNING madapter.train.driver: stopped after epoch 34/60 (train.max_epochs_per_run)",
    "/x/site-packages/mlflow/models/signature.py:12: UserWarning: no input example",
    "02:11:16 INFO madapter.cli: stage train: done in 5.2s: 34/60 epochs, val top1 0.933, checkpoint c.pt",
    "Updating lock file 'dvc.lock'",
    "To track the changes with git, run:",
    "",
]


def test_an_epoch_line_reads_as_figures_not_as_a_dict():
    assert epoch_line(RECORD, 60) == "epoch 33/60: train loss 0.612, acc 0.986 | val loss 0.701, acc 0.933 | lr 3.0e-03 | 1.5 s"
    no_val = {k: v for k, v in RECORD.items() if not k.startswith("val_")}
    assert epoch_line(no_val, 60) == "epoch 33/60: train loss 0.612, acc 0.986 | lr 3.0e-03 | 1.2 s"


def test_console_keeps_epochs_warnings_and_resume_and_drops_the_rest():
    shown = [console_line(line) for line in TRAIN_OUTPUT]
    texts = [text for _, text in filter(None, shown)]
    assert texts == [
        epoch_line(RECORD, 60),  # the log prefix and Ray's worker prefix are cut
        "resuming run demo after epoch 32 (MLflow run ab)",
        TRAIN_OUTPUT[9],
        TRAIN_OUTPUT[10],
    ]
    levels = {text: level for level, text in filter(None, shown)}
    assert levels[TRAIN_OUTPUT[9]] == logging.WARNING and levels[epoch_line(RECORD, 60)] == logging.INFO
    assert console_line("ERROR: failed to reproduce 'train': failed to run: python -m madapter train")
    assert console_line("error: https://mirror.invalid/x.rar: connection refused after 4 retries")
    assert console_line("ValueError: bad value")
    assert console_line("x.py:1: UserWarning: \x1b[33mno input example\x1b[0m") == (
        logging.WARNING, "x.py:1: UserWarning: no input example")
    assert console_line("x" * 1000 + " WARNING " + "y")[1].endswith("…")
    assert len(console_line("WARNING: " + "y" * 1000)[1]) == MAX_LINE


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


def _logger(name: str) -> tuple[logging.Logger, _Records]:
    log = logging.getLogger(f"test_console.{name}")
    log.propagate, handler = False, _Records()
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG)
    return log, handler


def test_stage_output_shows_a_few_lines_and_keeps_every_line(tmp_path):
    console, shown = _logger("console")
    full, everything = _logger("full")
    log_file = tmp_path / "outputs" / "logs" / "train.log"
    status = StatusLine(io.StringIO())  # not a terminal: no status line
    with StageOutput("train", console, full, log_file, status) as output:
        output.begin("dvc repro --single-item train")
        for line in TRAIN_OUTPUT:
            output.line(line + "\n")
        output.end(ran=True)

    texts = [text for _, text in shown.lines]
    assert texts[0].startswith("train: started (full log: ") and texts[0].endswith("train.log)")
    assert texts[-1].startswith("train: done in ") and texts[-1].endswith(
        ": 34/60 epochs, val top1 0.933, checkpoint c.pt")
    assert f"train: {epoch_line(RECORD, 60)}" in texts and len(texts) == 6
    # every non-empty line is in the log file, and in the full log unless the terminal showed it
    written = log_file.read_text()
    assert all(line in written for line in TRAIN_OUTPUT)
    assert len(everything.lines) + 4 == sum(1 for line in TRAIN_OUTPUT if line)
    assert not status.enabled and status.stream.getvalue() == ""
    assert output.summary == "34/60 epochs, val top1 0.933, checkpoint c.pt"


def test_a_skipped_stage_says_so_and_the_log_file_keeps_earlier_runs(tmp_path):
    console, shown = _logger("skipped")
    log_file = tmp_path / "train.log"
    for _ in range(2):
        with StageOutput("train", console, log_file=log_file, status=StatusLine(io.StringIO())) as output:
            output.begin("dvc repro --single-item train")
            output.line("Stage 'train' didn't change, skipping\n")
            output.end(ran=False)
    assert shown.lines[-1][1].startswith("train: up to date, skipped by DVC (")
    assert log_file.read_text().count("didn't change, skipping") == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_is_redrawn_in_place_on_a_terminal_only():
    terminal = _Terminal()
    status = StatusLine(terminal)
    status.show("train 12s: epoch 3/60\tsomething")
    status.clear()
    assert "\n" not in terminal.getvalue() and terminal.getvalue().startswith("\r\033[K")
    piped = io.StringIO()
    StatusLine(piped).show("train 12s")
    assert piped.getvalue() == ""


def test_the_log_file_is_under_the_repos_outputs_dir(tmp_path):
    assert stage_log_path(tmp_path, "train") == tmp_path / "outputs" / "logs" / "train.log"
    (tmp_path / "params.yaml").write_text("base:\n  outputs_dir: elsewhere\n")
    assert stage_log_path(tmp_path, "evaluate") == tmp_path / "elsewhere" / "logs" / "evaluate.log"
    (tmp_path / "params.yaml").write_text("base: [not, a, mapping\n")
    assert stage_log_path(tmp_path, "scan") == tmp_path / "outputs" / "logs" / "scan.log"


@pytest.mark.parametrize("epochs", [1, 2, 20, 21, 60, 200, 1000])
def test_a_long_run_logs_about_epoch_lines_epochs(epochs):
    logged = [e for e in range(1, epochs + 1) if epoch_is_logged(e, epochs)]
    assert logged[0] == 1 and logged[-1] == epochs
    assert len(logged) == epochs if epochs <= EPOCH_LINES else len(logged) <= EPOCH_LINES + 2
    resumed = [e for e in range(33, epochs + 1) if epoch_is_logged(e, epochs, first=33)]
    assert epochs < 33 or resumed[0] == 33


@dataclass
class _TrainResult:  # the fields of madapter.train.driver.TrainResult that the summary reads
    checkpoint: Path
    run_id: str
    epochs_done: int
    epochs: int
    completed: bool
    history: list[dict] = field(default_factory=list)


def test_results_are_summarised_in_one_short_line_never_repr(tmp_path):
    params = params_from_dict({"base": {"outputs_dir": "outputs"}})
    history = [dict(RECORD, epoch=e) for e in range(1, 61)]
    train = _TrainResult(Path("outputs/train/checkpoint.pt"), "f" * 32, 60, 60, True, history)
    evaluation = {"split": "test", "protocol": "8x3x4", "num_videos": 180, "top1": 0.95, "top5": 1.0,
                  "mean_class_acc": 0.95, "per_class": list(range(1000))}
    register = SimpleNamespace(model_name="madapter", version="3", alias="champion", promoted=True,
                               metric="top1", value=0.95, champion_before="2", reason="beats 2")
    lines = {
        "train": summarize("train", train, params),
        "evaluate": summarize("evaluate", evaluation, params),
        "register": summarize("register", register, params),
        "download": summarize("download", tmp_path, params),
        "unknown": summarize("index", tmp_path / "nothing-here", params),
        "odd": summarize("train", object(), params),
    }
    assert lines["train"].startswith("60/60 epochs, val top1 0.933, checkpoint outputs/train/checkpoint.pt")
    assert lines["evaluate"].startswith("test 8x3x4 on 180 videos: top1 0.950") and "outputs/evaluate/metrics.json" in lines["evaluate"]
    assert "madapter version 3 -> 'champion' (promoted" in lines["register"]
    assert lines["register"].endswith("outputs/register/registration.json")
    assert lines["unknown"] == f"wrote {tmp_path / 'nothing-here'}"
    inside = _TrainResult(Path.cwd() / "outputs" / "baseline" / "checkpoint.pt", "r", 1, 1, True)
    assert "checkpoint outputs/baseline/checkpoint.pt, " in summarize("train", inside, params)
    for line in lines.values():
        assert len(line) < MAX_LINE and "\n" not in line
        assert "Result(" not in line and "namespace(" not in line and "{" not in line


def test_rays_token_auth_default_notice_is_dropped_but_not_its_security_warning():
    from madapter.ray_runtime import AUTH_LOGGER, DropAuthDefaultNotice

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(AUTH_LOGGER, logging.WARNING, __file__, 1, message, None, None)

    drop = DropAuthDefaultNotice()
    assert not drop.filter(record("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled"))
    assert drop.filter(record("Token authentication is disabled for this Ray cluster. Anyone with network access"))
