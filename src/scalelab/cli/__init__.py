"""CLI entry point. Command modules register themselves on `app` when imported.

`main` is the console script: a `UserError` anywhere becomes one line on stderr and exit code 2.
"""

import sys

from scalelab.cli import catalog, compress, finetune, laws, plan, study, tune  # noqa: F401  (registers)
from scalelab.cli.app import app
from scalelab.errors import UserError


def main() -> None:
    try:
        app()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


__all__ = ["app", "main"]
