"""The `text` task loading a JSONL file, held in memory and streamed, against the same text as a
plain .txt file (the baseline), in the same run.

The data: this Python's standard-library sources, one document per file (a `text` field beside
an `id` and a `path`), repeated until the JSONL reaches `--mb` megabytes; the .txt holds the
same documents joined by a blank line, so all three give the same tokens (checked: the SHA-256
of the train and validation tokens must agree, else exit 1). Each mode builds the task in a
fresh process and reports its wall seconds and peak resident memory (VmHWM, which counts the
pages of a memory map the process touched: building the task touches none of the spilled ones,
training touches those its windows read). Seconds leave out importing `datasets` (`import_s`,
shown apart). `ratio` = mode seconds / .txt seconds; `rss_ratio`
likewise for memory.

    python benchmarks/text_formats.py [--mb 100] [--tokenizer bytes|bpe] [--vocab 4096]
                                      [--json OUT]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

CHILD = r"""
import hashlib, json, resource, sys, time
from scalelab.tasks.text import TextTask
from scalelab.tasks import text_files
options = json.loads(sys.argv[1])
start = time.perf_counter()
if options["path"].endswith(".jsonl"):
    text_files._datasets()  # its import, timed on its own
imported = time.perf_counter() - start
start = time.perf_counter()
task = TextTask(TextTask.Options(**options), 64)
seconds = time.perf_counter() - start
# Peak RSS before hashing touches the pages: VmHWM, this process's own (ru_maxrss on Linux also
# keeps the peak of the parent it was forked from, across exec).
try:
    with open("/proc/self/status") as status:
        rss_mb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
except OSError:
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
digest = hashlib.sha256(task.train.numpy())
digest.update(task.val.numpy())
print(json.dumps({"seconds": seconds, "import_s": imported, "rss_mb": rss_mb,
                  "tokens": int(task.train.numel() + task.val.numel()),
                  "sha256": digest.hexdigest()}))
"""


def documents(limit_bytes: int) -> list[str]:
    """Standard-library sources, in sorted order, repeated until they pass `limit_bytes`."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    docs: list[str] = []
    total = 0
    while total < limit_bytes:
        for f in files:
            try:
                text = f.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            docs.append(text)
            total += len(text.encode()) + 60  # about the JSON around it
            if total >= limit_bytes:
                break
    return docs


def write_inputs(folder: Path, mb: float) -> tuple[Path, Path]:
    docs = documents(int(mb * 1e6))
    jsonl, txt = folder / "data.jsonl", folder / "data.txt"
    with open(jsonl, "w", encoding="utf-8") as out:
        for i, doc in enumerate(docs):
            out.write(json.dumps({"id": i, "path": f"doc{i}.py", "text": doc}) + "\n")
    txt.write_text("\n\n".join(docs), encoding="utf-8")
    return jsonl, txt


def run_mode(options: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(options)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"failed: {options}\n{proc.stderr}")
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=100.0, help="size of the JSONL file")
    parser.add_argument("--tokenizer", choices=["bytes", "bpe"], default="bytes")
    parser.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    tok = {"tokenizer": args.tokenizer}
    if args.tokenizer == "bpe":
        tok["vocab_size"] = args.vocab
    with tempfile.TemporaryDirectory() as tmp:
        jsonl, txt = write_inputs(Path(tmp), args.mb)
        sizes = {"jsonl_mb": jsonl.stat().st_size / 1e6, "txt_mb": txt.stat().st_size / 1e6}
        modes = {
            ".txt (baseline)": {"path": str(txt), **tok},
            "jsonl in memory": {"path": str(jsonl), "streaming": False, **tok},
            "jsonl streamed": {"path": str(jsonl), "streaming": True, **tok},
        }
        rows = {name: run_mode(options) for name, options in modes.items()}
    base = rows[".txt (baseline)"]
    print(f"JSONL {sizes['jsonl_mb']:.1f} MB, text {sizes['txt_mb']:.1f} MB, "
          f"tokenizer {args.tokenizer}, {base['tokens']:,} tokens")
    print(f"{'mode':<18} {'import s':>8} {'seconds':>8} {'ratio':>6} {'peak RSS MB':>12} "
          f"{'rss_ratio':>9}")
    for name, row in rows.items():
        row["ratio"] = row["seconds"] / base["seconds"]
        row["rss_ratio"] = row["rss_mb"] / base["rss_mb"]
        print(f"{name:<18} {row['import_s']:>8.2f} {row['seconds']:>8.2f} {row['ratio']:>6.2f} "
              f"{row['rss_mb']:>12.0f} {row['rss_ratio']:>9.2f}")
    same = len({row["sha256"] for row in rows.values()}) == 1
    print("tokens identical in all modes" if same else "TOKENS DIFFER")
    if args.json:
        args.json.write_text(json.dumps({
            "date": datetime.date.today().isoformat(), "machine": platform.platform(),
            "python": platform.python_version(), **sizes, "tokenizer": args.tokenizer,
            "modes": rows, "same_tokens": same}, indent=1))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
