"""Classification metrics and their plots, shared by training (validation) and evaluation.

Everything works on plain numpy arrays of scores so the same code scores one view, or the
average of many views (clips x crops) of the same video.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from madapter.fileio import CSV_ENCODING, atomic_open, atomic_path

logger = logging.getLogger(__name__)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (shifts by the max so large logits don't overflow)."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def average_views(view_logits: np.ndarray) -> np.ndarray:
    """Video-level class probabilities from per-view logits ``[N, V, C]`` -> ``[N, C]``.

    Each view is turned into probabilities first and then averaged (MMAction2's
    ``average_clips='prob'``): one over-confident view cannot dominate the vote the way it
    would when averaging raw logits.
    """
    if view_logits.ndim != 3:
        raise ValueError(f"average_views expects [N, V, C] logits, got shape {view_logits.shape}")
    return softmax(view_logits.astype(np.float64), axis=-1).mean(axis=1)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose true label is among the ``k`` highest scores (k capped at #classes)."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    # Stable sort on the negated scores: ties go to the lower class index, as argmax does.
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[true, predicted]`` counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), preds.astype(np.int64)), 1)
    return matrix


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN for classes absent from the evaluated split."""
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / np.maximum(support, 1), np.nan)


def mean_class_accuracy(matrix: np.ndarray) -> float:
    """Mean of per-class accuracies over the classes present (the unbiased number on skewed splits)."""
    acc = per_class_accuracy(matrix)
    present = ~np.isnan(acc)
    return float(acc[present].mean()) if present.any() else float("nan")


def classification_report(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """top-1, top-5, mean class accuracy and the confusion matrix of video-level scores ``[N, C]``."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = scores.argmax(axis=1)
    matrix = confusion_matrix(preds, labels, num_classes)
    return {
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "mean_class_acc": mean_class_accuracy(matrix),
        "confusion": matrix,
        "per_class_acc": per_class_accuracy(matrix),
        "num_videos": int(len(labels)),
    }


def write_confusion_csv(matrix: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """Long-format ``actual,predicted,count`` rows: what ``dvc plots`` confusion templates read."""
    with atomic_open(path, "w", **CSV_ENCODING) as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted", "count"])
        for i, actual in enumerate(classes):
            for j, predicted in enumerate(classes):
                writer.writerow([actual, predicted, int(matrix[i, j])])
    return path


def write_predictions_csv(preds: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """One ``actual,predicted`` row per video: the input of DVC's ``confusion`` plot template."""
    with atomic_open(path, "w", **CSV_ENCODING) as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        for p, y in zip(preds, labels, strict=True):
            writer.writerow([classes[int(y)], classes[int(p)]])
    return path


def write_per_class_csv(matrix: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """``class,accuracy,support`` per class (accuracy empty when the class has no videos)."""
    acc = per_class_accuracy(matrix)
    support = matrix.sum(axis=1)
    with atomic_open(path, "w", **CSV_ENCODING) as f:
        writer = csv.writer(f)
        writer.writerow(["class", "accuracy", "support"])
        for name, a, n in zip(classes, acc, support, strict=True):
            writer.writerow([name, "" if np.isnan(a) else f"{a:.6f}", int(n)])
    return path


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG (counts written in each cell)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    support = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    norm = matrix / support
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    if len(classes) <= 30:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if matrix[i, j]:
                    color = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=6, color=color)
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")  # tmp ends in .tmp
    plt.close(fig)
    return path


def plot_curves(history: Sequence[dict], path: Path) -> Path:
    """Per-epoch train/val loss and accuracy from the training history records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax in (("loss", ax_loss), ("acc", ax_acc)):
        for split in ("train", "val"):
            values = [h.get(f"{split}_{key}") for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")  # tmp ends in .tmp
    plt.close(fig)
    return path
