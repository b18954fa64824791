"""A user's own model for `family: {name: custom, factory: "my_model:make"}`: one integer knob
(the hidden width) in, an nn.Module out. scalelab counts its parameters and searches the knob for
each rung's target size. This one is a residual MLP for 8x8 digit images (flattened)."""

import torch.nn as nn


class Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc(nn.functional.gelu(self.norm(x)))


def make(width: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), Residual(width), Residual(width),
                         nn.LayerNorm(width), nn.Linear(width, 10))
