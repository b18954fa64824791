"""Write the example JSONL file from documentation that ships with Python (no download).

    python examples/data/make_jsonl.py

python_topics.jsonl: the Python language reference's topics as `help()` shows them (the
standard library's `pydoc_data.topics`: 79 topics, about 460 kB of English and code in
Python 3.11), one record per topic, `{"topic": ..., "text": ...}`, in sorted topic order. The
text task reads its `text` field (examples/hf-llama.yaml).
"""

from __future__ import annotations

import json
from pathlib import Path
from pydoc_data.topics import topics

HERE = Path(__file__).parent
OUT = HERE / "python_topics.jsonl"


def write(path: Path = OUT) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for name in sorted(topics):
            fh.write(json.dumps({"topic": name, "text": topics[name]}, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":
    print(write())
