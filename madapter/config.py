"""Typed schema of ``params.yaml``.

Every stage reads its own section plus ``base``.  The whole file is validated once, up front,
so a typo or a bad value stops the pipeline *before* any work is done, with one line that
names the offending key (``params.yaml: train.epochs: must be > 0 (got -1)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DATASETS = ("synthetic", "ucf101", "hmdb51", "kinetics400", "kinetics600", "kinetics700", "ssv2", "list")
DatasetName = Literal["synthetic", "ucf101", "hmdb51", "kinetics400", "kinetics600", "kinetics700", "ssv2", "list"]
Tuning = Literal["madapter", "linear", "full", "inserted"]
FusionKind = Literal["add", "concat", "gated"]
TemporalKind = Literal["conv", "attention", "none"]


class ConfigError(ValueError):
    """A bad ``params.yaml``: the message is one line naming the file and key."""


class _Section(BaseModel):
    """Base for every section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class BaseSection(_Section):
    seed: int = 0
    data_dir: Path = Path("data")
    outputs_dir: Path = Path("outputs")


class SyntheticSection(_Section):
    """The built-in offline dataset (real mp4 files made deterministically from ``base.seed``).

    The defaults are the demo set: 12 classes (6 pairs of time-reversed motions) x 90 videos: 180
    test videos, so a 90% top-1 is not luck, and 720 training videos, which the M-adapter on a frozen
    random-init ViT-Tiny needs: on frozen features, 40 epochs, it reached 37% / 77% / 89% test top-1
    with 30 / 60 / 90 videos a class (it overfits the smaller sets).
    """

    videos_per_class: int = Field(90, ge=3)
    """At least 3: every class needs a video in each of train, val and test (1/6 each go to val and test)."""
    num_frames: int = Field(16, ge=4)
    size: int = Field(64, ge=16)
    fps: int = Field(8, gt=0)
    classes: int = Field(12, ge=2, le=12, multiple_of=2)
    """How many classes of the built-in catalogue to use: whole pairs (a class and its reversed twin), easiest first."""
    task: Literal["order", "textured", "appearance"] = "order"
    """``order``: classes differ ONLY in frame order (reversal pairs: the demo set).  ``appearance``:
    classes differ only in what the object looks like (shape x colour family); its motion and the
    motion's direction are random and class-independent, so frame order carries no class information
    (the control set of the accuracy benchmark).  ``textured``: the order set's reversal pairs over busy
    scenes (textured backgrounds, a static distractor, heavier noise): a second order set."""


class DatasetSection(_Section):
    name: DatasetName = "synthetic"
    fold: int = Field(1, ge=1, le=3)
    source: str | None = None
    """Override of the official location: a mirror base URL or a local directory."""
    list_root: Path | None = None
    """For ``name: list``: directory the relative paths in the list files are resolved against."""
    classes_file: Path | None = None
    synthetic: SyntheticSection = SyntheticSection()


class DownloadSection(_Section):
    retries: int = Field(4, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    verify_checksums: bool = True
    backoff_s: float = Field(1.0, ge=0)
    """First retry waits this long; each further retry doubles it."""
    keep_archives: bool = False
    """Keep downloaded archives under ``<raw>/.downloads`` after extraction (else deleted to save space)."""
    checksums: dict[str, str] = {}
    """Extra pinned sha256 digests, keyed by the file's path relative to the dataset's base URL."""


class ScanSection(_Section):
    workers: int = Field(2, ge=1)
    timeout_s: float = Field(30.0, gt=0)
    min_frames: int = Field(4, ge=1)
    """Videos with fewer decodable frames are quarantined: too short to show any motion."""


class DecodeSection(_Section):
    backend: Literal["decord", "pyav"] = "decord"
    frames_per_video: int = Field(16, ge=1)
    """Frames kept per video on a fixed uniform grid; training samples ``model.num_frames`` of them."""
    size: int = Field(64, ge=16)
    """Frames are resized so the short side is ``size`` and centre-cropped square."""
    shard_size: int = Field(256, ge=1)
    format: Literal["jpeg", "raw"] = "jpeg"
    """How stored frames are kept: ``jpeg`` (libjpeg-turbo through simplejpeg; ~1/10 of the bytes,
    only a clip's frames decoded) or ``raw`` uint8 arrays (the uncompressed reference, memory-mapped;
    37 GB for UCF101 at 240 px, 3.7 GB as JPEG).  Measured in ``benchmarks/store.py``."""
    quality: int = Field(90, ge=1, le=100)
    """JPEG quality (``format: jpeg`` only; ``raw`` ignores it).  90: the highest of the measured
    qualities that keeps the store below 1/8 of uint8 (1/10 at a pixel error of ~2.3 on natural
    video; 95 is 1/7); docs/benchmarks.md "Frame store" has bytes and error per quality."""
    workers: int = Field(2, ge=1)


class ModelSection(_Section):
    backbone: str = "vit_tiny_patch16_224"
    pretrained: bool = False
    weights_file: Path | None = None
    init_seed: int = 0
    """Seed of a random-init backbone, so it rebuilds identically from a checkpoint."""
    img_size: int | None = 64
    """Input resolution given to timm (``None``: the model's default)."""
    levels: list[int] | None = None
    """Backbone block indices to tap; ``None``: 4 evenly spaced blocks, the last included."""
    level_pool: int | None = Field(None, ge=1)
    """Average-pool (adaptive) each tapped level's token grid to at most ``level_pool x level_pool``
    inside the model, before the branch (``None``: full grids).  Part of the model, so training on
    frames or on cached features, evaluation, predict and serving all see the same grids; it also
    bounds the features stage's disk.  Only ``tuning: madapter`` reads levels: other modes ignore it."""
    num_frames: int = Field(8, ge=1)
    tuning: Tuning = "madapter"
    width: int = Field(192, gt=0)
    fusion: FusionKind = "add"
    temporal: TemporalKind = "conv"
    temporal_kernel: int = Field(3, ge=1)
    use_cls: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    adapter_bottleneck: int = Field(64, gt=0)
    backbone_chunk: int | None = Field(8, ge=1)
    """Frames per backbone call, rounded down to whole clips (``None``: the whole batch at once).
    A frozen backbone keeps nothing for backward, so chunking caps its transient memory; ~8
    frames per call is also faster on CPU (cache)."""
    half_precision: bool = False
    """Run the backbone's forward in bf16 (fp16 where bf16 is unsupported) on CUDA, in training,
    evaluation and serving alike. ``False``: a frozen backbone runs in fp32 even when ``train.amp``
    is on (a trainable backbone, ``full``/``inserted``, then follows ``train.amp``). No effect on CPU."""

    @field_validator("levels")
    @classmethod
    def _levels_non_empty(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(v) == 0:
            raise ValueError("must list at least one block index, or be null for the default")
        return v


class FeaturesSection(_Section):
    """The ``features`` stage: the frozen backbone's multi-level outputs, computed once.

    The branch never backpropagates into a frozen backbone (``model.tuning: madapter`` or
    ``linear``), so its outputs for a given view are the same every epoch and every sweep trial:
    computing them once and training from them (``train.source: features``) skips the most
    expensive part of every step.  Only a fixed number of augmented training views can be stored,
    hence ``train_views``.
    """

    train_views: int = Field(4, ge=1)
    """Augmented views stored per training video: temporal jitter + random crop, exactly the views
    the frames path (``ClipDataset(train=True)``) draws at epochs ``0..train_views-1``; training from
    features cycles through them.  More views: more augmentation, proportionally more disk."""
    dtype: Literal["float16", "float32"] = "float16"
    """Stored precision; float16 halves the disk and is well within what the branch can resolve."""
    batch_size: int = Field(16, gt=0)
    """Clips per backbone forward pass in one extraction actor (run control: a clip's values do not depend
    on its batch-mates, so the bytes are the same for any value; tested)."""
    actors: int = Field(1, ge=1)
    """Ray Data actors each holding one backbone (run control: same bytes for any count)."""
    use_gpu: bool = False
    """Give each actor a GPU.  Not run control: GPU kernels round differently and ``model.half_precision``
    applies on CUDA only, so the stored values change (a DVC param of the stage)."""
    shard_size: int = Field(256, ge=1)
    """Views per ``.npy`` shard (few big files keep DVC fast); a video's views never span two shards."""
    object_store_mb: int = Field(512, ge=75)
    """Ray object store when ``features`` starts a local Ray: the features travel through it from the
    actors to the writer (run control; ViT-B/16 at 224 px is ~10 MB per view in float16)."""


class TrainSection(_Section):
    epochs: int = Field(4, gt=0)
    batch_size: int = Field(8, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(0.5, ge=0)
    grad_accum: int = Field(1, ge=1)
    amp: Literal["none", "bf16", "fp16"] = "none"
    """Mixed precision of the trainable part during training, on CUDA (fp16 adds a gradient scaler).
    The frozen backbone's precision is ``model.half_precision``, never this. No effect on CPU."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    compile: bool = False
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(2, ge=0)
    storage_path: Path | str = Path("outputs/ray")
    """Ray Train's storage: a local path, a shared filesystem path (the same on every node), or a URI
    Ray's storage accepts (``s3://``, ``gs://``, ``file://``), kept as a string (see ``madapter.train.storage``)."""

    @field_validator("storage_path", mode="plain")
    @classmethod
    def _path_or_uri(cls, value: Any) -> Path | str:
        text = str(value)  # a URI stays a string: Path("s3://b/x") would fold it into "s3:/b/x"
        return text if "://" in text else Path(text)

    run_name: str = "madapter-demo"
    loader_workers: int = Field(0, ge=0)
    max_epochs_per_run: int | None = Field(None, gt=0)
    """Stop this invocation after so many epochs (a time budget); re-running resumes where it stopped."""
    checkpoints_to_keep: int = Field(2, ge=1)
    object_store_mb: int = Field(300, ge=75)
    """Ray object store size when ``train`` starts a local Ray instance (we move no data through it)."""
    source: Literal["frames", "features"] = "frames"
    """What training reads: ``frames`` decodes clips from the frame store and runs the backbone every
    step; ``features`` reads the frozen backbone's outputs stored by the ``features`` stage (much
    faster, but only ``features.train_views`` augmented views per video, and only for a frozen
    backbone: ``model.tuning`` ``madapter`` or ``linear``)."""


class EvaluateSection(_Section):
    """The ``frames x clips x crops`` protocol, run on the SOURCE videos (as ``predict`` does).

    ``clips`` temporal views spread over the whole video (TSN: each view takes one frame per
    segment of ``model.num_frames`` equal segments, at a different phase), each seen as ``crops``
    square crops along the long side at the short-side scale (frames resized so the short side is
    the model's input size).  The same views for the same video in ``predict`` and the served model.
    """

    clips: int = Field(1, ge=1)
    crops: int = Field(1, ge=1)
    batch_size: int = Field(8, gt=0)
    """Videos per batch; each contributes ``clips x crops`` views to the model batch."""
    split: Literal["val", "test"] = "test"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where evaluate, predict and the served model run: ``auto`` = cuda when available."""
    loader_workers: int = Field(2, ge=0)
    """Processes decoding source videos for evaluation (0: in the main process)."""

    @property
    def protocol(self) -> str:
        return f"{self.clips}x{self.crops}"


class MlflowSection(_Section):
    tracking_uri: str | None = None
    """``None``: ``$MLFLOW_TRACKING_URI`` or a local SQLite store under ``base.outputs_dir``."""
    experiment: str = "madapter"


class RegisterSection(_Section):
    model_name: str = "madapter"
    metric: str = "top1"
    top_k: int = Field(5, ge=1)
    min_improvement: float = Field(0.0, ge=0)
    """A challenger takes ``champion`` only if it beats it by more than this (same protocol and dataset)."""
    backbone_weights: Literal["artifact", "reference"] = "artifact"
    """``artifact``: the registered model carries the backbone's weights (the ``model.weights_file``, or
    the hub weights exported to safetensors), so it loads anywhere its artifacts can be read: another
    directory, a Ray actor on another node, a KubeRay pod, a machine with no model hub.  ``reference``:
    it carries only the branch and rebuilds the backbone from the hub or ``model.weights_file`` where it
    is loaded (a few MB instead of the backbone's size; the file must then be readable there)."""


class ServeSection(_Section):
    """``python -m madapter serve``: the model behind Ray Serve (not a pipeline stage: editing it reruns nothing)."""

    model: str | None = None
    """``models:/<name>@<alias>`` (follows the alias), ``models:/<name>/<version>`` or a ``checkpoint.pt``;
    ``null``: ``models:/<register.model_name>@champion``."""
    host: str = "127.0.0.1"
    """Loopback by default: on a cluster it goes behind the scale stack's authentication (docs/operations.md)."""
    port: int = Field(8000, ge=1, le=65535)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    top_k: int | None = Field(None, ge=1)
    """Labels per answer (a request may ask ``?top_k=``); ``null``: ``register.top_k``."""
    model_replicas: int = Field(1, ge=1)
    max_model_replicas: int | None = Field(None, ge=1)
    """Above ``model_replicas``: Ray Serve autoscales the model replicas up to this on ongoing requests."""
    gpus_per_model_replica: float = Field(0.0, ge=0)
    """1 on a GPU machine: each model replica gets a GPU and classifies there (``device: auto``)."""
    decode_replicas: int = Field(1, ge=1)
    """CPU replicas that decode uploads, each one decoding process (killed and replaced when a decode hangs)."""
    max_batch_size: int = Field(8, ge=1)
    """Videos classified in one forward pass, gathered across requests (``@serve.batch``)."""
    batch_wait_timeout_s: float = Field(0.02, ge=0)
    max_ongoing_requests: int = Field(16, ge=1)
    """Requests in flight per replica; beyond them up to ``max_queued_requests`` wait, then 503 + Retry-After."""
    max_queued_requests: int = Field(64, ge=1)
    retry_after_s: float = Field(1.0, ge=0)
    max_upload_mb: float = Field(64.0, gt=0)
    max_decode_s: float = Field(30.0, gt=0)
    """A video whose probing and decoding take longer is refused (422); its decoding process is replaced."""
    max_frames: int = Field(20_000, ge=1)
    """Frames a video may declare (about 11 min at 30 fps): a longer container is refused before decoding."""
    max_frame_pixels: int = Field(4096 * 2160, ge=1)
    """Width x height a video's frames may have (4K): a 10,000 x 10,000 stream is refused before decoding."""
    allow_paths_under: Path | None = None
    """Server-side video paths (``{"path": ...}``) are refused unless they resolve under this directory;
    the served MLflow pyfunc takes the same switch (``$MADAPTER_ALLOW_PATHS_UNDER``)."""
    alias_poll_s: float = Field(10.0, gt=0)
    """How often the alias is looked up: when it moves, new requests go to the new version, none is dropped."""

    @model_validator(mode="after")
    def _batches_can_fill(self) -> ServeSection:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(f"serve.max_ongoing_requests ({self.max_ongoing_requests}) must be at least "
                             f"serve.max_batch_size ({self.max_batch_size}): a model replica would never see a full batch")
        return self


class TuneSpaceSection(_Section):
    """What a sweep searches, one entry per branch hyperparameter (read by :mod:`madapter.tune.space`).

    An empty list leaves that key out of the search: every trial keeps the value the params give it.
    """

    lr: list[float] = [1e-4, 1e-2]
    """``train.lr``: ``[low, high]``, sampled log-uniformly."""
    weight_decay: list[float] = [0.0, 0.1]
    """``train.weight_decay``: ``[low, high]``, sampled uniformly."""
    width: list[int] = [64, 128, 192]
    """``model.width``: a choice."""
    levels: list[list[int] | None] = []
    """``model.levels``: a choice of block lists (``null``: the default 4 evenly spaced blocks).
    Only with ``train.source: frames``: cached features hold the outputs of ``model.levels`` alone."""
    temporal: list[TemporalKind] = ["conv", "attention", "none"]
    """``model.temporal``: a choice."""
    fusion: list[FusionKind] = ["add", "concat", "gated"]
    """``model.fusion``: a choice."""

    @field_validator("lr", "weight_decay")
    @classmethod
    def _range(cls, v: list[float], info) -> list[float]:
        if v and (len(v) != 2 or not 0 <= v[0] < v[1] or (info.field_name == "lr" and v[0] <= 0)):
            lowest = "0 <" if info.field_name == "lr" else "0 <="
            raise ValueError(f"must be [] (not searched) or [low, high] with {lowest} low < high")
        return v

    @field_validator("width")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(w <= 0 for w in v):
            raise ValueError("every width must be > 0")
        return v

    @field_validator("levels")
    @classmethod
    def _level_lists(cls, v: list[list[int] | None]) -> list[list[int] | None]:
        if any(choice is not None and (not choice or min(choice) < 0) for choice in v):
            raise ValueError("each choice must be a non-empty list of block indices >= 0, or null")
        return v


class TuneSection(_Section):
    """``python -m madapter tune``: a Ray Tune sweep of the branch's hyperparameters, pruned by ASHA.

    Not a DVC stage, and no stage's param: a sweep explores; what it produces is a preset
    (``output``) that a tracked ``dvc exp run`` then trains.  Every trial is a train run (the same
    worker loop) of ``max_epochs`` epochs on one Ray worker, logged as a child of the sweep's
    MLflow run.
    """

    name: str = Field("madapter-sweep", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """The sweep: its directory ``<storage_path>/<name>``, its MLflow parent run, trial runs
    ``<name>-<trial id>``.  Starting a sweep of the same name again resumes it."""
    trials: int = Field(8, ge=1)
    """Configurations sampled from ``space`` (Tune's ``num_samples``)."""
    max_epochs: int = Field(4, ge=1)
    """``train.epochs`` of every trial, and ASHA's ``max_t``."""
    grace_period: int = Field(1, ge=1)
    """ASHA stops no trial before it has trained this many epochs."""
    reduction_factor: float = Field(2.0, gt=1)
    """At each ASHA rung (epochs ``grace_period x reduction_factor^k``) only the best
    ``1/reduction_factor`` of the trials go on."""
    metric: Literal["val_acc", "train_loss"] = "val_acc"
    """The epoch metric ASHA and the choice of the best trial go by (``val_acc`` maximised,
    ``train_loss`` minimised): what each epoch's ``ray.train.report`` carries."""
    max_concurrent_trials: int | None = Field(None, ge=1)
    """Trials running at once; ``null``: as many as the Ray cluster fits (each needs one worker of
    ``train.cpus_per_worker`` CPUs, and a GPU with ``train.use_gpu``).  A resumed sweep keeps the
    limit it started with (Tune restores it)."""
    storage_path: Path = Path("outputs/tune")
    """Where sweeps live: Tune's state, each trial's outputs and Ray checkpoints, under ``<name>/``."""
    output: Path | None = None
    """The best configuration as a preset file; ``null``: ``<storage_path>/<name>/best.yaml``."""
    space: TuneSpaceSection = TuneSpaceSection()

    @model_validator(mode="after")
    def _grace_within_budget(self) -> TuneSection:
        if self.grace_period > self.max_epochs:
            raise ValueError(f"tune.grace_period ({self.grace_period}) must not exceed tune.max_epochs "
                             f"({self.max_epochs}): ASHA could never stop a trial")
        return self


# ``register`` is the stage's name everywhere (dvc.yaml, CLI); pydantic only warns that it
# shadows ``BaseModel.register`` (an ABC helper nobody calls on Params), so silence that one.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Params(_Section):
    base: BaseSection = BaseSection()
    dataset: DatasetSection = DatasetSection()
    download: DownloadSection = DownloadSection()
    scan: ScanSection = ScanSection()
    decode: DecodeSection = DecodeSection()
    features: FeaturesSection = FeaturesSection()
    model: ModelSection = ModelSection()
    train: TrainSection = TrainSection()
    evaluate: EvaluateSection = EvaluateSection()
    mlflow: MlflowSection = MlflowSection()
    register: RegisterSection = RegisterSection()
    tune: TuneSection = TuneSection()
    serve: ServeSection = ServeSection()

    @model_validator(mode="after")
    def _stored_grid_allows_jitter(self) -> Params:
        """Training draws each clip's T frames with temporal jitter from the stored grid: that needs
        more stored frames than T, or every epoch sees the same frames (a silent loss of augmentation)."""
        stored, wanted = self.decode.frames_per_video, self.model.num_frames
        if stored <= wanted:
            raise ValueError(
                f"decode.frames_per_video ({stored}) must be greater than model.num_frames ({wanted}) so training "
                f"can jitter clips in time; store at least 2x, e.g. decode.frames_per_video: {2 * wanted}"
            )
        return self

    @model_validator(mode="after")
    def _features_need_frozen_backbone(self) -> Params:
        """Stored features are the outputs of a FROZEN backbone: a trained one changes them every step."""
        if self.train.source == "features" and self.model.tuning in ("full", "inserted"):
            raise ValueError(
                f"train.source: features needs a frozen backbone (model.tuning: madapter or linear, "
                f"got {self.model.tuning}); set train.source: frames"
            )
        return self


DEMO_IMG_SIZE = 64
"""``model.img_size`` and ``decode.size`` of params.yaml: the demo's 64-px synthetic set on a CPU."""


def demo_only_settings(params: Params) -> list[str]:
    """One line per setting of params.yaml that exists only to keep the offline demo small, when a
    real dataset (not ``synthetic``) runs with it: the key, why it hurts there, what to set.

    Why a warning and not an error: each can be a deliberate choice (a quick look at a real set), but
    a user who points params.yaml at their own videos gets them silently.  ``level_pool <= 2`` is no
    longer the demo's, but it is the setting that looks like a harmless disk saving: pooling the token
    grid to 2x2 cost the branch most of its order signal in the ablations (docs/benchmarks.md), and at
    224 px it averages a 14x14 grid of a ViT-B/16 into 4 tokens.
    """
    if params.dataset.name == "synthetic":
        return []
    start = "start from presets/custom_list.yaml (your own videos) or a dataset's preset"
    found = []
    pool = params.model.level_pool
    if pool is not None and pool <= 2:
        found.append(f"model.level_pool: {pool} pools every level's token grid to {pool}x{pool}, which cost the branch "
                     f"most of its order signal in the ablations (docs/benchmarks.md); set null (full grids), or {start}")
    if params.model.img_size is not None and params.model.img_size <= DEMO_IMG_SIZE:
        found.append(f"model.img_size: {params.model.img_size} is the demo's CPU resolution, far below what pretrained "
                     f"backbones were trained at; set null (the backbone's own, 224 for a ViT-B/16), or {start}")
    if params.decode.size <= DEMO_IMG_SIZE:
        found.append(f"decode.size: {params.decode.size} stores the demo's {params.decode.size}-px frames; store at "
                     f"least the model's input (e.g. 240 for 224-px crops), or {start}")
    return found


MOVED_KEYS = {
    "features.pool": ("model.level_pool", "pooling is part of the model now, so training, evaluation, predict and "
                      "serving see the same grids; the features stage stores them pooled"),
}
"""Keys that used to exist, by their new name and why they moved: an old params file gets a line saying so."""


def _validation_error_line(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden" and key in MOVED_KEYS:
        new, why = MOVED_KEYS[key]
        return f"{source}: {key} moved to {new} ({why}); rename the key"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}' (check the spelling; see params.yaml in the repository for valid keys)"
    if not key:  # a check across sections (a model validator): its message names the keys itself
        return f"{source}: {first['msg'].removeprefix('Value error, ')}"
    got = first.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: {key}: {first['msg']}{shown}"


def params_from_dict(data: dict[str, Any] | None, source: str = "params") -> Params:
    """Validate a mapping into :class:`Params`; raises :class:`ConfigError` with one line."""
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_validation_error_line(source, err)) from None


def read_yaml_sections(path: Path, missing_hint: str) -> dict[str, Any]:
    """Read a params-style YAML file (a mapping of sections); every problem is one ConfigError line."""
    if not path.is_file():
        raise ConfigError(f"{path}: {missing_hint}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections (base, dataset, train, ...)")
    return data


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The model class of a field that is a section (``dataset.synthetic``); ``None`` for a value."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _is_mapping(annotation: Any) -> bool:
    """Whether a field holds a mapping (``download.checksums``), possibly optional."""
    if annotation is dict or get_origin(annotation) is dict:
        return True
    return any(_is_mapping(arg) for arg in get_args(annotation))


def split_key(dotted: str, schema: type[BaseModel] = Params) -> tuple[str, ...]:
    """Split a dotted key only as deep as ``schema`` has sections and fields.

    Why not at every dot: a field may be a mapping whose own keys contain dots (file names in
    ``download.checksums``).  ``download.checksums.UCF101.rar`` -> ``("download", "checksums",
    "UCF101.rar")``: once the path reaches a field, the rest is ONE key inside its value.  Parts
    the schema does not know are split at every dot, so validation can name the unknown key.
    """
    parts = dotted.split(".")
    model: type[BaseModel] | None = schema
    for i, name in enumerate(parts):
        field = model.model_fields.get(name) if model is not None else None
        model = _section_type(field.annotation) if field is not None else None
        if field is not None and model is None:
            rest = ".".join(parts[i + 1 :])
            return (*parts[: i + 1], rest) if rest else tuple(parts[: i + 1])
    return tuple(parts)


def leaf_of(dotted: str, schema: type[BaseModel] = Params) -> tuple[str, bool] | None:
    """``(field key, holds a mapping)`` of the schema field ``dotted`` falls in; ``None`` if unknown."""
    path = split_key(dotted, schema)
    model: type[BaseModel] | None = schema
    for i, name in enumerate(path):
        field = model.model_fields.get(name) if model is not None else None
        if field is None:
            return None
        model = _section_type(field.annotation)
        if model is None:
            return ".".join(path[: i + 1]), _is_mapping(field.annotation)
    return None


def flatten_keys(
    mapping: Mapping[str, Any], schema: type[BaseModel] | None = Params, prefix: str = ""
) -> dict[str, Any]:
    """Sections -> dotted keys, stopping at the schema's fields: ``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``.

    A field's value is kept whole even when it is a mapping (``download.checksums`` stays one key
    whose value is ``{"UCF101.rar": ...}``), so keys with dots round-trip.  Keys the schema does
    not know are kept whole too; validation reports them.
    """
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        field = schema.model_fields.get(str(key)) if schema is not None else None
        section = _section_type(field.annotation) if field is not None else None
        if section is not None and isinstance(value, dict):
            flat.update(flatten_keys(value, section, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def merge_value(old: Any, new: Any) -> Any:
    """``new`` over ``old``: mappings merge key by key (recursively), anything else is replaced.

    The same rule as ``dvc exp run -S`` (Hydra merges a mapping into an existing one), so a
    preset applied with ``--preset`` and through ``preset-args | xargs dvc exp run`` gives the
    same params.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        merged = dict(old)
        for key, value in new.items():
            merged[key] = merge_value(old.get(key), value)
        return merged
    return new


def apply_override(data: dict[str, Any], dotted: str, value: Any, source: str = "params") -> None:
    """Set one dotted key in raw params ``data`` (sections are created as needed; see :func:`merge_value`)."""
    *parents, leaf = split_key(dotted)
    node = data
    for depth, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parents[: depth + 1])
            raise ConfigError(f"{source}: {where}: is a single value ({child!r}), so '{dotted}' cannot be set in it")
        node = child
    node[leaf] = merge_value(node.get(leaf), value)


def load_params(
    path: str | Path = "params.yaml",
    overrides: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
) -> Params:
    """Read and validate ``params.yaml`` with dotted-key ``overrides`` applied in order.

    ``overrides`` maps keys as :func:`split_key` reads them (``train.epochs``,
    ``download.checksums.UCF101.rar``) to values; a mapping value merges into the existing one.
    Pairs are accepted as well as a dict, so two presets that both set a mapping both count.
    """
    path = Path(path)
    data = read_yaml_sections(path, "file not found (run from the repository root or pass --params)")
    pairs = overrides.items() if isinstance(overrides, Mapping) else (overrides or ())
    for dotted, value in pairs:
        apply_override(data, dotted, value, str(path))
    return anchored_files(params_from_dict(data, str(path)), path.resolve().parent)


def anchored_files(params: Params, root: Path) -> Params:
    """``model.weights_file`` made absolute against ``root`` (the directory of params.yaml: the
    repository root) when it is relative.

    Why here, once: the path is copied into checkpoints, ``features.json`` and the registered model,
    and read by Ray workers, ``mlflow models serve`` and KubeRay pods whose working directory is not
    the repository; a relative path read there names another file, or none.
    """
    weights = params.model.weights_file
    if weights is None or weights.is_absolute():
        return params
    model = params.model.model_copy(update={"weights_file": (root / weights).resolve()})
    return params.model_copy(update={"model": model})
