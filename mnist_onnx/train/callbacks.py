"""Keras callbacks and pictures of a training run (TensorFlow, Keras and matplotlib load only when called)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._fileio import atomic_path, write_json_atomic

__all__ = ["LogToCallable", "EpochHistory", "KeepBestWeights", "plot_curves", "plot_samples"]


class LogToCallable:
    """Keras callback that reports one line per epoch to a callable (used when not on a terminal)."""

    def __new__(cls, keras: Any, emit: Callable[[str], None], epochs: int) -> Any:
        class _Cb(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                logs = logs or {}
                parts = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()) if isinstance(v, float))
                emit(f"epoch {epoch + 1}/{epochs}: {parts}")

        return _Cb()


class EpochHistory:
    """Keras callback: the history of every finished epoch, kept across an interrupted run.

    ``fit()`` resumed by BackupAndRestore reports only the epochs it ran itself,
    so a resumed run's history, epoch count and best epoch would leave out the
    epochs before the interruption.  This callback saves the per-epoch logs to
    ``path`` (beside the backup) after each epoch and reloads them on resume;
    entries from an epoch that is being run again are replaced.
    """

    def __new__(cls, keras: Any, path: Path) -> Any:
        class _Cb(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.epochs: list[dict[str, float]] = []

            def on_train_begin(self, logs: dict | None = None) -> None:
                try:
                    saved = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    saved = []
                self.epochs = saved if isinstance(saved, list) else []

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                entry = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float, np.floating))}
                self.epochs = self.epochs[:epoch] + [entry]
                if path.parent.is_dir():
                    write_json_atomic(path, self.epochs)

            def history(self) -> dict[str, list[float]]:
                keys = [k for k in self.epochs[-1]] if self.epochs else []
                return {k: [float(e.get(k, math.nan)) for e in self.epochs] for k in keys}

        return _Cb()


class KeepBestWeights:
    """Keras callback: remember the weights of the best ``val_accuracy`` epoch and restore them at the end.

    With a constant learning rate the last epoch's validation accuracy swings by
    a few tenths of a point (the seed recipe on 42,000 rows: 99.20% at epoch 9,
    98.98% at epoch 10), so saving the last epoch can throw the best model away.
    """

    def __new__(cls, keras: Any) -> Any:
        class _Cb(keras.callbacks.Callback):
            best = -1.0
            best_epoch = 0
            weights: list | None = None

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                acc = float((logs or {}).get("val_accuracy", -1.0))
                if acc > self.best:
                    self.best, self.best_epoch, self.weights = acc, epoch + 1, self.model.get_weights()

            def on_train_end(self, logs: dict | None = None) -> None:
                if self.weights is not None:
                    self.model.set_weights(self.weights)

        return _Cb()


def plot_curves(history: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    epochs = range(1, len(history["loss"]) + 1)
    ax_loss.plot(epochs, history["loss"], label="training loss")
    ax_loss.plot(epochs, history["val_loss"], label="validation loss")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, history["accuracy"], label="training accuracy")
    ax_acc.plot(epochs, history["val_accuracy"], label="validation accuracy")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_samples(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(36, len(images))
    cols = 6
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.4, rows * 1.6))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i, :, :, 0], cmap="gray_r")
        ok = predicted[i] == labels[i]
        ax.set_title(
            f"{predicted[i]}" + ("" if ok else f" (true {labels[i]})"), color="black" if ok else "red", fontsize=9
        )
    fig.suptitle("validation digits: predicted label (red = wrong)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
