"""scalelab: how quality and cost grow with the number of parameters."""

__version__ = "0.1.0"
