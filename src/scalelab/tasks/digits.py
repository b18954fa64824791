"""Task `digits`: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes).

The data ship inside scikit-learn (`sklearn.datasets.load_digits`), so the task needs no download.
Decisions: pixels (0..16) are divided by 16 into [0, 1] and not standardised further; inputs are
images (1, 8, 8) for a CNN, or vectors of 64 with `flatten` (an MLP accepts either); the split is
`tabular`'s stratified split (the same helper), so both tasks split classes the same way.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from scalelab.tasks.base import TaskIO
from scalelab.tasks.tabular import InMemoryTask, stratified_split

N_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)


@lru_cache(maxsize=1)
def load() -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels in [0, 1] as float32 (n, 64), labels int64 (n,))."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.data.astype(np.float32) / 16.0)
    y = torch.from_numpy(digits.target.astype(np.int64))
    return x, y


class DigitsTask(InMemoryTask):
    """Classify a handwritten digit.

    Attributes: `options`, `classes` ("0".."9"), `train_index` / `val_index` (rows of the
    dataset), `x_train`, `y_train`, `x_val`, `y_val`, `io` = TaskIO("image", (1, 8, 8), 10), or
    TaskIO("vector", (64,), 10) with `flatten`.
    """

    name = "digits"
    unit = "example"
    objective = "classification"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        val_fraction: float = Field(0.2, gt=0, lt=1)
        seed: int = Field(0, description="seed of the split")
        flatten: bool = Field(False, description="vectors of 64 instead of 1x8x8 images")

    def __init__(self, options: Options, context: int | None = None):
        self.options = options
        x, y = load()
        shape = (x.size(1),) if options.flatten else IMAGE_SHAPE
        x = x.reshape(-1, *shape)
        self.train_index, self.val_index = stratified_split(y, options.val_fraction, options.seed)
        self.x_train, self.y_train = x[self.train_index], y[self.train_index]
        self.x_val, self.y_val = x[self.val_index], y[self.val_index]
        self.classes = [str(c) for c in range(N_CLASSES)]
        self.io = TaskIO("vector" if options.flatten else "image", shape, N_CLASSES)
        digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes())
        self._sha256 = digest.hexdigest()

    def fingerprint(self) -> dict:
        import sklearn

        return {
            "dataset": "sklearn.datasets.load_digits",
            "sklearn": sklearn.__version__,
            "rows": int(self.x_train.size(0) + self.x_val.size(0)),
            "train_rows": int(self.x_train.size(0)),
            "val_rows": int(self.x_val.size(0)),
            "classes": list(self.classes),
            "input_shape": list(self.io.input_shape),
            "val_fraction": self.options.val_fraction,
            "seed": self.options.seed,
            "sha256": self._sha256,
        }
