import torch

from scalelab.tasks import get_task
from scalelab.tasks.pycode import corpus_files, is_validation, stdlib_root


def test_corpus_is_the_stdlib_without_tests_or_site_packages():
    files = corpus_files(stdlib_root())
    assert len(files) > 300
    parts = {p for f in files for p in f.parts[:-1]}
    assert not parts & {"site-packages", "test", "tests"}
    assert files == sorted(files, key=lambda p: p.as_posix())


def test_split_is_by_file_and_about_five_percent():
    files = corpus_files(stdlib_root())
    val = [f for f in files if is_validation(f)]
    assert 0.02 < len(val) / len(files) < 0.09


def test_fingerprint_and_batches_are_deterministic():
    task = get_task("pycode", context=16)
    fp = task.fingerprint()
    assert fp["files"] > 300 and len(fp["sha256"]) == 64
    assert fp["train_bytes"] + fp["val_bytes"] == fp["bytes"]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x1, y1 = task.batch(4, g1)
    x2, y2 = task.batch(4, g2)
    assert torch.equal(x1, x2) and x1.shape == (4, 16)
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # targets are inputs shifted by one byte
    w1, w2 = task.eval_data(1024), task.eval_data(1024)
    assert torch.equal(w1[0], w2[0]) and w1[0].shape == (64, 16)
    t1 = task.eval_data(1024, "train")
    assert t1[0].shape == (64, 16) and not torch.equal(t1[0], w1[0])
