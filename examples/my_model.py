"""A user's own model for `family: {name: custom, factory: "my_model:make"}`: one integer knob
(the hidden width) in, an nn.Module out. scalelab counts its parameters and searches the knob for
each rung's target size. This one is a residual MLP for images or vectors (flattened). Its `io`
parameter is the task's TaskIO: the input shape of one example and the number of outputs, so the
model's first and last layers fit the task (8x8 digit images and 10 classes for `digits`)."""

import math

import torch.nn as nn


class Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc(nn.functional.gelu(self.norm(x)))


def make(width: int, io) -> nn.Module:
    n_in = math.prod(io.input_shape)  # 1 x 8 x 8 = 64 for digits
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, width), Residual(width), Residual(width),
                         nn.LayerNorm(width), nn.Linear(width, io.n_outputs))
