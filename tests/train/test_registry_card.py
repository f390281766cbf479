"""A registered version explains itself (issue 22, part 3), read back from a REAL ``mlflow server``.

The session's trained model (``trained``: the head trained on cached features, a random-init
backbone) is evaluated and registered once under its own name; then, only through ``MlflowClient``
and MLflow's loaders: the version's description is the model card (its sections, the dataset, the
number of test videos, the backbone, the random-init sentence), ``MODEL_CARD.md`` is in the logged
model's directory, the training run has its dataset input (name, digest, videos per split), and the
model loads and predicts from its own input example.  Logging it raised no MLflow warning about the
input example, the type hints, the signature or CloudPickle.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.models import Model

from madapter.config import Params
from madapter.evaluate import evaluate
from madapter.fileio import file_digest
from madapter.lineage import DataLineage, data_lineage, index_digest
from madapter.model_card import (
    CARD_FILE,
    MAX_DESCRIPTION,
    RANDOM_INIT_SENTENCE,
    EvalRow,
    ModelFacts,
    Recipe,
    as_description,
    render_card,
)
from madapter.paths import StagePaths
from madapter.predict import VideoPredictor
from madapter.registry import RegisterResult, register
from madapter.tracking import fluent_tracking
from tests.common.processes import BIN, REPO

pytestmark = pytest.mark.integration
MODEL = "madapter-card"
UNWANTED = re.compile(r"input[ _]example|type hint|signature|cloudpickle", re.IGNORECASE)
"""What MLflow must not warn about when the model is logged (issue 22 acceptance)."""


@dataclass
class Registered:
    params: Params
    checkpoint: Path
    metrics: dict
    registration: RegisterResult
    warned: list[str]
    """Every warning (``warnings`` and the ``mlflow`` logger at WARNING and above) raised while registering."""


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


@contextmanager
def _mlflow_warnings() -> Iterator[list[str]]:
    """Collect Python warnings and the ``mlflow`` logger's warnings (MLflow's own handler does not propagate
    to the root logger that ``caplog`` reads)."""
    handler, found = _Records(), []
    logger = logging.getLogger("mlflow")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
    finally:
        logger.removeHandler(handler)
        found.extend([f"{w.category.__name__}: {w.message}" for w in caught] + handler.lines)


@pytest.fixture(scope="module")
def registered(trained, mlflow_server: str) -> Registered:
    """The trained model evaluated (on its cached features: seconds) and registered as :data:`MODEL`."""
    params, result = trained
    params = params.model_copy(update={"register": params.register.model_copy(update={"model_name": MODEL})})
    metrics = evaluate(params)
    with _mlflow_warnings() as warned:
        registration = register(params)
    return Registered(params, Path(result.checkpoint), metrics, registration, warned)


@pytest.fixture(scope="module")
def client(mlflow_server: str) -> MlflowClient:
    return MlflowClient(mlflow_server, registry_uri=mlflow_server)


@pytest.fixture(scope="module")
def model_dir(registered: Registered, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The registered version's files, as ``mlflow models serve`` downloads them."""
    uri = f"models:/{MODEL}/{registered.registration.version}"
    with fluent_tracking(mlflow_server):
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path_factory.mktemp("m"))))


def test_the_description_is_the_model_card(registered: Registered, client: MlflowClient, model_dir: Path) -> None:
    card = client.get_model_version(MODEL, registered.registration.version).description
    for section in ("## Intended use", "## Model", "## Data", "## Training", "## Evaluation", "## Limits"):
        assert f"\n{section}\n" in card, section
    paths = StagePaths.from_params(registered.params)
    classes = (paths.index / "classes.txt").read_text().split()
    assert f"one of the {len(classes)} classes of `synthetic`" in card
    assert all(f"`{name}`" in card for name in classes)
    metrics = registered.metrics
    assert metrics["num_videos"] == 40
    assert f"| test | 4x1x1 (registry gate) | 40 | {metrics['top1']:.3f} | {metrics['top5']:.3f} |" in card
    assert "160 train / 40 val / 40 test videos" in card
    assert f"Backbone: `{registered.params.model.backbone}`, frozen; random init (seed 0)" in card
    assert f"**{RANDOM_INIT_SENTENCE}**" in card
    assert "20/20 epochs, lr 0.001" in card and "`train.source: features`" in card
    assert index_digest(paths.index)[:32] in card and "no dvc.lock" in card
    # the same text, as MODEL_CARD.md in the logged model's directory (beside MLmodel)
    assert (model_dir / CARD_FILE).read_text(encoding="utf-8") == card
    assert (model_dir / "MLmodel").is_file()


def test_the_training_run_has_its_dataset_input(registered: Registered, client: MlflowClient) -> None:
    paths = StagePaths.from_params(registered.params)
    inputs = client.get_run(registered.registration.run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["synthetic"]  # registering again would not add a second
    dataset, tags = inputs[0].dataset, {t.key: t.value for t in inputs[0].tags}
    assert dataset.digest == index_digest(paths.index)[:32]
    assert json.loads(dataset.profile) == {"videos": {"train": 160, "val": 40, "test": 40}, "classes": 4}
    assert dataset.source_type == "local" and json.loads(dataset.source)["uri"] == str(paths.raw.resolve())
    assert tags["mlflow.data.context"] == "training" and "index files" in tags["madapter.digest_of"]


def test_the_model_is_code_and_predicts_from_its_own_input_example(registered: Registered, model_dir: Path) -> None:
    flavor = Model.load(str(model_dir)).flavors["python_function"]
    assert flavor.get("model_code_path") and "python_model" not in flavor  # models from code, no pickle
    example = Model.load(str(model_dir)).load_input_example(str(model_dir))
    assert list(example.columns) == ["video_bytes"] and isinstance(example["video_bytes"][0], bytes)
    out = mlflow.pyfunc.load_model(str(model_dir)).predict(example)
    assert out["error"][0] == "" and len(out["labels"][0]) == min(registered.params.register.top_k, 4)
    local = VideoPredictor.from_checkpoint(registered.checkpoint, params=registered.params)
    assert out["labels"][0][0] == local.predict_bytes(example["video_bytes"][0], 1)[0]["label"]


def test_a_version_pickled_as_the_previous_code_logged_it_still_loads(registered: Registered, model_dir: Path,
                                                                     client: MlflowClient, mlflow_server: str) -> None:
    """Before models from code, the pyfunc was a CloudPickle of a ``VideoClassifierPyfunc`` (by reference to
    ``madapter.registry.VideoClassifierPyfunc``): such versions must keep loading and predicting."""
    import madapter
    from madapter.registry import VideoClassifierPyfunc, model_signature

    flavor = Model.load(str(model_dir)).flavors["python_function"]
    artifacts = {name: str(model_dir / info["path"]) for name, info in flavor["artifacts"].items()}
    example = Model.load(str(model_dir)).load_input_example(str(model_dir))
    experiment = client.get_run(registered.registration.run_id).info.experiment_id
    with fluent_tracking(mlflow_server), mlflow.start_run(experiment_id=experiment, run_name="pickled-as-before"):
        info = mlflow.pyfunc.log_model(name="model", python_model=VideoClassifierPyfunc(), artifacts=artifacts,
                                       code_paths=[str(Path(madapter.__file__).parent)], input_example=example,
                                       signature=model_signature(registered.params.register.top_k))
    with fluent_tracking(mlflow_server):
        pickled = mlflow.pyfunc.load_model(info.model_uri)
    assert "python_model" in pickled.metadata.flavors["python_function"]  # really the pickle format
    expected = mlflow.pyfunc.load_model(str(model_dir)).predict(example)
    assert pickled.predict(example)["labels"].tolist() == expected["labels"].tolist()


def test_logging_the_model_raised_no_mlflow_warning_about_it(registered: Registered) -> None:
    assert not [w for w in registered.warned if UNWANTED.search(w)], registered.warned
    # MLflow checks predict's type hints when the class is DEFINED (PythonModel.__init_subclass__): a fresh import
    proc = subprocess.run([str(BIN / "python"), "-W", "always", "-c", "import madapter.registry"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "type hint" not in proc.stderr.lower(), proc.stderr


def test_the_lineage_takes_the_dvc_hash_only_from_the_lock_of_this_checkpoint(registered: Registered,
                                                                             tmp_path: Path) -> None:
    """A ``dvc.lock`` whose train stage wrote this checkpoint (its ``.dir`` listing in the DVC cache says so)
    gives the DVC md5 of the data trained on; a lock of another checkpoint gives the index digest."""
    paths = StagePaths.from_params(registered.params)
    checkpoint_md5 = file_digest(registered.checkpoint, "md5")
    features, index = str(paths.features.resolve()), str(paths.index.resolve())
    train_out = "0" * 30 + "ab.dir"
    lock = {"schema": "2.0", "stages": {"train": {
        "deps": [{"path": features, "md5": "1" * 32 + ".dir"}, {"path": index, "md5": "2" * 32 + ".dir"}],
        "outs": [{"path": str(paths.train.resolve()), "md5": train_out}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    manifest = tmp_path / ".dvc" / "cache" / "files" / "md5" / train_out[:2] / train_out[2:]
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps([{"md5": checkpoint_md5, "relpath": "checkpoint.pt"}]))

    ours = data_lineage(registered.params, "features", checkpoint_md5, repo=tmp_path)
    assert ours.digest == "1" * 32 + ".dir" and ours.from_dvc and "dvc.lock" in ours.digest_of
    assert ours.dvc_hashes == {features: "1" * 32 + ".dir", index: "2" * 32 + ".dir"}
    other = data_lineage(registered.params, "features", "f" * 32, repo=tmp_path)
    assert not other.from_dvc and other.digest == index_digest(paths.index)[:32]


def test_a_pretrained_backbone_card_does_not_claim_random_init() -> None:
    facts = ModelFacts("vit_base_patch16_224", "timm pretrained weights `vit_base_patch16_224.augreg`", False,
                       "madapter", [2, 5, 8, 11], "add", "conv", 192, 1000, 86_000_000)
    data = DataLineage("ucf101", "d" * 32, "DVC md5", "https://example.org/", "official download", {"train": 9,
                       "val": 0, "test": 3}, ["a", "b"], "/raw")
    card = render_card("m", "1", facts, Recipe(1, 1, "0.1", "8", "1", "frames"),
                       [EvalRow("test", "8x1x1", 1.0, 1.0, 1.0, 3, gate=True)], data, top_k=2)
    assert RANDOM_INIT_SENTENCE not in card and "Synthetic" not in card and "pretrained weights" in card


def test_a_card_longer_than_mlflows_description_column_is_cut_at_a_line() -> None:
    card = "".join(f"- line {i}\n" for i in range(1000))
    cut = as_description(card)
    assert len(cut) <= MAX_DESCRIPTION and cut.startswith("- line 0\n") and CARD_FILE in cut.splitlines()[-1]
    assert as_description("short\n") == "short\n"
