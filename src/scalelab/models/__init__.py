"""Model families. A family turns a shape into an nn.Module and a target size into a shape."""

from scalelab.models.gpt import GPT, GPTConfig, build, count_params, shape_for

__all__ = ["GPT", "GPTConfig", "build", "count_params", "shape_for"]
