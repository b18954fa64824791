"""Bad input to `scalelab compress`: one clear line, exit code 2, nothing in the study changed."""

from __future__ import annotations

import pytest

from scalelab.records import RungPlan
from scalelab.storage import StudyStore
from tests.compress.spec_helpers import study_fingerprint
from tests.helpers import scalelab_each

BAD_ARGUMENTS = [
    (["--methods", "int8,quantum"], "unknown compression method 'quantum'"),
    (["--methods", "prune:1.5"], "between 0 and 1"),
    (["--methods", "sparse:0"], "between 0 and 1"),
    (["--methods", "lowrank:-0.2"], "between 0 and 1"),
    (["--rung", "9"], "rung 9 does not exist"),
    (["--rung", "0", "--methods", "distill"], "smaller than rung 0"),
    (["--rung", "biggest"], "rung must be"),
    (["--device", "tpu"], "--device"),
    (["--methods", "fp16", "--executor", "slurm"], "--executor slurm: must be one of local, ray"),
]


@pytest.fixture(scope="module")
def refused(study) -> tuple[list, tuple, tuple]:
    """Every bad command line run on the study (`scalelab_each`: one process each), with the
    study's fingerprint before the first and after the last."""
    before = study_fingerprint(study)
    procs = scalelab_each(*[["compress", study, *args] for args, _ in BAD_ARGUMENTS])
    return procs, before, study_fingerprint(study)


@pytest.mark.parametrize("args, words", BAD_ARGUMENTS)
def test_bad_compress_arguments_change_nothing(refused, args, words):
    procs, before, after = refused
    proc = procs[BAD_ARGUMENTS.index((args, words))]
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and words in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert after == before


@pytest.fixture(scope="module")
def not_studies(tmp_path_factory) -> dict:
    """`compress` on a study without trained rungs and on a folder that is no study, and
    `recommend` on a missing folder (`scalelab_each`: one process each): {case: (process, its
    folder, the folder's fingerprint before or None)}."""
    empty = tmp_path_factory.mktemp("empty") / "study"
    with StudyStore.create_or_open(empty) as store:
        store.init_study("empty", "pycode", "gpt", {"name": "empty"})
        store.add_rungs([RungPlan(
            rung=0, family="gpt", shape={"n_layer": 1, "d_model": 16, "n_head": 1},
            target_n=5, n_params=10, n_nonembed=5, D=100, unit="byte", steps=1, batch_size=1,
            units_per_step=100, lr=1e-3, warmup_steps=0, seed=0).to_dict()])
    before = study_fingerprint(empty)
    plain = tmp_path_factory.mktemp("not-a-study")
    cases = {"untrained": (["compress", empty, "--methods", "int8"], empty, before),
             "compress": (["compress", plain], plain, None),
             "recommend": (["recommend", plain / "nope"], plain / "nope", None)}
    procs = scalelab_each(*[argv for argv, _, _ in cases.values()])
    return {k: (proc, folder, fp) for (k, (_, folder, fp)), proc
            in zip(cases.items(), procs, strict=True)}


def test_study_without_trained_rungs(not_studies):
    proc, folder, before = not_studies["untrained"]
    assert proc.returncode == 2 and "no trained rungs" in proc.stderr, proc.stderr
    assert study_fingerprint(folder) == before


def test_not_a_study(not_studies):
    compress, folder, _ = not_studies["compress"]
    assert compress.returncode == 2 and "not a study folder" in compress.stderr
    assert not (folder / "study.db").exists() and not (folder / "study.lock").exists()
    recommend, _, _ = not_studies["recommend"]
    assert recommend.returncode == 2 and "not a study folder" in recommend.stderr
