"""What rank 0 logs into the training run's MLflow run, from inside the Ray worker.

Ray Train V2 rejects ``MLflowLoggerCallback``, so the worker logs itself, through an explicit
client and run id (the driver created or resumed the run and passed its id and tracking URI).
Only rank 0 logs: the numbers it logs are already reduced over all workers.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from madapter.config import Params
from madapter.models.precision import describe_recorded

logger = logging.getLogger(__name__)


class RunLog:
    """Rank 0's handle on the MLflow run: setup tags, one metric batch per epoch, final artifacts."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id

    def setup(self, model: torch.nn.Module, params: Params, device: torch.device,
              features_dir: str | None = None) -> None:
        """Parameter counts (trainable vs. frozen backbone; 0 backbone on cached features), the model's
        class and the precision the run trains in.  On cached features (``features_dir``, the worker's
        absolute path) the backbone's device and precision are the extraction's, from ``features.json``
        (:func:`~madapter.models.precision.describe_recorded`): no backbone runs in this run."""
        from madapter.data.features.feature_store import backbone_computed_on, read_features_meta
        from madapter.models.build import count_parameters

        counts = count_parameters(model)
        for key in ("trainable", "backbone", "total"):
            self.client.set_tag(self.run_id, f"params_{key}", str(counts[key]))
        self.client.log_metric(self.run_id, "trainable_params", counts["trainable"])
        self.client.set_tag(self.run_id, "train.model_class", type(model).__name__)  # FeatureClassifier: no backbone
        extracted = None
        if params.train.source == "features":
            if features_dir is None:
                raise ValueError("train.source: features: RunLog.setup needs the worker's features directory")
            extracted = backbone_computed_on(read_features_meta(Path(features_dir)))
        recorded = describe_recorded(params.model.half_precision, params.train.amp, device, extracted)
        for key, value in recorded.items():
            self.client.set_tag(self.run_id, f"train.{key}", value)

    def final(self, params: Params, classes: list[str], val_report: dict[str, Any], history: list[dict]) -> None:
        """Confusion matrix PNG, per-class accuracy CSV, label map, resolved config, curves."""
        from madapter import metrics
        from madapter.tracking import log_dict_artifact

        with tempfile.TemporaryDirectory() as tmp:
            tmp_dir = Path(tmp)
            matrix = val_report["confusion"]
            files = [
                metrics.plot_confusion(matrix, classes, tmp_dir / "confusion_matrix.png", "validation (1x1)"),
                metrics.write_per_class_csv(matrix, classes, tmp_dir / "per_class_accuracy.csv"),
                metrics.write_confusion_csv(matrix, classes, tmp_dir / "confusion.csv"),
                metrics.plot_curves(history, tmp_dir / "curves.png"),
            ]
            for path in files:
                self.client.log_artifact(self.run_id, str(path), "train")
        log_dict_artifact(self.client, self.run_id, {str(i): name for i, name in enumerate(classes)}, "label_map.json")
        log_dict_artifact(self.client, self.run_id, params.model_dump(mode="json"), "config/params.yaml")
