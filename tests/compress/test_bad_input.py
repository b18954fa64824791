"""Bad input to `scalelab compress`: one clear line, exit code 2, nothing in the study changed."""

from __future__ import annotations

import pytest

from scalelab.records import RungPlan
from scalelab.store import StudyStore
from tests.compress.spec_helpers import study_fingerprint
from tests.helpers import scalelab


@pytest.mark.parametrize("args, words", [
    (["--methods", "int8,quantum"], "unknown compression method 'quantum'"),
    (["--methods", "prune:1.5"], "between 0 and 1"),
    (["--methods", "sparse:0"], "between 0 and 1"),
    (["--methods", "lowrank:-0.2"], "between 0 and 1"),
    (["--rung", "9"], "rung 9 does not exist"),
    (["--rung", "0", "--methods", "distill"], "smaller than rung 0"),
    (["--rung", "biggest"], "rung must be"),
    (["--device", "tpu"], "--device"),
])
def test_bad_compress_arguments_change_nothing(study, args, words):
    before = study_fingerprint(study)
    proc = scalelab("compress", study, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and words in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert study_fingerprint(study) == before


def test_study_without_trained_rungs(tmp_path):
    folder = tmp_path / "empty"
    with StudyStore.create_or_open(folder) as store:
        store.init_study("empty", "pycode", "gpt", {"name": "empty"})
        store.add_rungs([RungPlan(
            rung=0, family="gpt", shape={"n_layer": 1, "d_model": 16, "n_head": 1},
            target_n=5, n_params=10, n_nonembed=5, D=100, unit="byte", steps=1, batch_size=1,
            units_per_step=100, lr=1e-3, warmup_steps=0, seed=0).to_dict()])
    before = study_fingerprint(folder)
    proc = scalelab("compress", folder, "--methods", "int8")
    assert proc.returncode == 2 and "no trained rungs" in proc.stderr, proc.stderr
    assert study_fingerprint(folder) == before


def test_not_a_study(tmp_path):
    proc = scalelab("compress", tmp_path)
    assert proc.returncode == 2 and "not a study folder" in proc.stderr
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "study.lock").exists()
    proc = scalelab("recommend", tmp_path / "nope")
    assert proc.returncode == 2 and "not a study folder" in proc.stderr
