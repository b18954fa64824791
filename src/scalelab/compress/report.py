"""TEMPORARY re-export: the compression section moved to `scalelab.report.compression`.

Only `scalelab.study.write_outputs` still imports it from here; delete this file when that import
switches (compress must not import report).
"""

from scalelab.report.compression import compression_section

__all__ = ["compression_section"]
