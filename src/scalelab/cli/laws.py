"""Commands: placeholder until this module is filled in."""
from scalelab.cli.app import app  # noqa: F401
