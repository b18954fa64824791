"""scalelab: how quality and cost grow with the number of parameters.

The Python API beside the CLI::

    from scalelab import Study
    study = Study.create(spec, "studies/mine")          # a StudySpec, a dict or a YAML path
    study.run()                                         # train (or resume), fit, write outputs
    Study.load("studies/mine").law().predict([1e7])     # read-only: the law, with intervals

`Study` is `scalelab.api.Study`; `run_study(spec, out, task=..., family=...)` trains and returns
summary.json's content in one call. Both take a `StudySpec` (or a plain dict of spec keys) and,
optionally, the user's own Task and Family objects (protocols in `scalelab.tasks.base` and
`scalelab.models.base`).
The heavy modules (torch) are imported on first use, so `import scalelab` stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Study", "StudySpec", "run_study"]


def run_study(spec: Any = None, out: Any = "studies/default", **kwargs: Any) -> dict:
    """Train (or resume) a study and write its outputs; returns summary.json's content.
    See `scalelab.study.run_study` for the keyword arguments (task, family, device_name, ...)."""
    from pathlib import Path

    from scalelab.spec import StudySpec, default_spec, parse_spec
    from scalelab.study import run_study as run

    if spec is None:
        spec = default_spec()
    elif not isinstance(spec, StudySpec):
        spec = parse_spec(spec)
    return run(spec, Path(out), **kwargs)


def __getattr__(name: str) -> Any:
    if name == "StudySpec":
        from scalelab.spec import StudySpec

        return StudySpec
    if name == "Study":
        from scalelab.api import Study

        return Study
    raise AttributeError(name)
