"""Run folders as transactions: staging and swap, the writer's lock, a full disk, Ctrl-C."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import visionzoo.engine.train as train_mod
import visionzoo.runs as runs
import visionzoo.utils as utils
from visionzoo.cli import main
from visionzoo.engine.config import TrainConfig
from visionzoo.engine.fit import fit
from visionzoo.errors import UserError
from visionzoo.runs import RunLock, device_of, load_run
from visionzoo.utils import append_jsonl

QUICK = dict(model="lenet5", dataset="synthetic", epochs=1, batch_size=64, threads=1,
             device="cpu", tensorboard=False)  # fmt: skip


def train(out: Path, **kw) -> dict:
    overwrite = kw.pop("overwrite", False)
    resume = kw.pop("resume", False)
    return fit(TrainConfig(**{**QUICK, **kw}), out, overwrite=overwrite, resume=resume, quiet=True)


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.parent.iterdir() if p.name.startswith(f".{run.name}."))


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def done_run(tmp_path) -> Path:
    train(tmp_path / "run")
    return tmp_path / "run"


def test_failed_overwrite_leaves_the_old_run_resumable(done_run):
    before = snapshot(done_run)
    with pytest.raises(UserError, match="not a folder"):
        train(done_run, dataset="imagefolder:/nonexistent", overwrite=True)
    assert snapshot(done_run) == before and leftovers(done_run) == []
    train(done_run, resume=True, epochs=2)  # the old checkpoint still resumes
    assert [m["epoch"] for m in load_run(done_run).metrics] == [1, 2]


def test_overwrite_swaps_in_a_whole_run(done_run, monkeypatch):
    seen = {}
    real_commit = runs.RunWriter.commit

    def commit(self):  # at the swap: the old run intact, the new one complete beside it
        seen["old"] = load_run(self.out).config["seed"]
        seen["staged"] = sorted(p.name for p in self.path.iterdir())
        real_commit(self)

    monkeypatch.setattr(runs.RunWriter, "commit", commit)
    train(done_run, overwrite=True, seed=1)
    assert seen["old"] == 0
    assert {"config.json", "model.safetensors", "checkpoint.pt", "metrics.jsonl"} <= set(
        seen["staged"]
    )
    assert load_run(done_run).config["seed"] == 1 and leftovers(done_run) == []


def test_out_with_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds other files, not a run"):
        train(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_full_disk_while_overwriting_leaves_the_old_run(done_run, monkeypatch):
    before = snapshot(done_run)
    monkeypatch.setattr(utils, "atomic_write", no_space)
    with pytest.raises(UserError) as err:
        train(done_run, overwrite=True, model="lenet5_paper")
    assert (
        str(err.value)
        == f"no space left on {device_of(done_run)}: the run in {done_run} is unchanged"
    )
    assert snapshot(done_run) == before and leftovers(done_run) == []


def test_full_disk_on_resume_of_a_finished_run_keeps_its_config(done_run, monkeypatch):
    before = snapshot(done_run)
    monkeypatch.setattr(utils, "atomic_write", no_space)
    for epochs in (1, 3):
        with pytest.raises(UserError, match="the run in .* is unchanged"):
            train(done_run, resume=True, epochs=epochs)
    assert snapshot(done_run) == before
    config = json.loads(before["config.json"])
    assert config["status"] == "done" and "final_metrics" in config


def test_full_disk_after_the_first_checkpoint_says_how_to_resume(tmp_path, monkeypatch):
    real = train_mod.save_checkpoint
    calls = {"n": 0}

    def second_fails(path, state, cfg):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, state, cfg)

    monkeypatch.setattr("visionzoo.engine.fit.save_checkpoint", second_fails)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="keeps its last checkpoint; free some space and resume"):
        train(out, checkpoint_every=3)
    assert json.loads((out / "config.json").read_text())["status"] == "interrupted"
    assert load_run(out).model is not None  # weights came with the first checkpoint


def test_torch_save_on_a_full_disk_is_enospc(tmp_path, monkeypatch):
    import io

    import torch

    class Full(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(utils.os, "fdopen", lambda fd, mode: Full(fd, "wb"))
    with pytest.raises(OSError) as err:  # torch.save itself says "enforce fail at ..."
        utils.atomic_write(tmp_path / "c.pt", lambda f: torch.save({"w": torch.ones(3)}, f))
    assert err.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


def test_append_jsonl_leaves_no_half_line(tmp_path, monkeypatch):
    file = tmp_path / "metrics.jsonl"
    append_jsonl(file, {"epoch": 1})
    monkeypatch.setattr(utils.os, "fsync", no_space)
    with pytest.raises(OSError):
        append_jsonl(file, {"epoch": 2})
    assert file.read_text() == '{"epoch": 1}\n'


@pytest.fixture
def tmpfs(tmp_path):
    """A 3 MB file system (root only, where mounting is allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root and permission to mount a tmpfs")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError:
            pass


def test_real_full_disk(tmpfs, capsys):
    run = tmpfs / "run"
    train(run)
    before = snapshot(run)
    fill(tmpfs)
    argv = ["train", "resnet20", "--dataset", "synthetic", "--epochs", "1", "--threads", "1",
            "--device", "cpu", "--quiet", "--overwrite", "--out", str(run)]  # fmt: skip
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"visionzoo: error: no space left on tmpfs ({tmpfs}): the run in {run} is unchanged"
    )
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert "is unchanged" in capsys.readouterr().err
    assert snapshot(run) == before and leftovers(run) == []
    assert main(["eval", str(run)]) == 0


def test_a_second_writer_is_refused(done_run):
    lock = RunLock(runs._sibling(done_run, "lock"), done_run)
    lock.acquire(print)
    try:
        for kw in ({"overwrite": True}, {"resume": True}):
            with pytest.raises(UserError, match=f"is being written by process {os.getpid()}"):
                train(done_run, **kw)
    finally:
        lock.release()
    assert main(["eval", str(done_run)]) == 0  # readers need no lock


def test_a_stale_lock_is_taken_over(done_run, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = runs._sibling(done_run, "lock")
    lock.write_text(json.dumps({"pid": dead.pid, "host": "h", "since": "then"}))
    train(done_run, resume=True, epochs=2)
    assert f"took over the lock on {done_run} from process {dead.pid}" in capsys.readouterr().err
    assert not lock.exists()


def interrupt_at(monkeypatch, call: int, error: BaseException) -> None:
    real = train_mod.compute_loss
    calls = {"n": 0}

    def compute_loss(*args):
        calls["n"] += 1
        if calls["n"] == call:
            raise error
        return real(*args)

    monkeypatch.setattr(train_mod, "compute_loss", compute_loss)


def test_ctrl_c_after_a_checkpoint_says_resume(tmp_path, monkeypatch, capsys):
    interrupt_at(monkeypatch, 5, KeyboardInterrupt())
    out = tmp_path / "run"
    argv = ["train", "lenet5", "--dataset", "synthetic", "--epochs", "1", "--threads", "1",
            "--device", "cpu", "--quiet", "--checkpoint-every", "3", "--out", str(out)]  # fmt: skip
    assert main(argv) == 130
    hint = f"interrupted: resume with `visionzoo train --resume {out}`"
    assert capsys.readouterr().err.strip() == f"visionzoo: {hint}"
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "interrupted" and config["hint"] == hint
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["status"] == "done"


def test_ctrl_c_before_the_first_checkpoint(done_run, monkeypatch):
    before = snapshot(done_run)
    interrupt_at(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(
        KeyboardInterrupt, match="before the first checkpoint: the run in .* is unchanged"
    ):
        train(done_run, overwrite=True)
    assert snapshot(done_run) == before
    fresh = done_run.parent / "fresh"
    interrupt_at(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt, match="nothing was written to"):
        train(fresh)
    assert not fresh.exists() and leftovers(fresh) == []


def test_divergence_is_recorded(tmp_path, monkeypatch):
    interrupt_at(
        monkeypatch,
        5,
        train_mod.TrainingDiverged(
            "the loss became nan; the last good checkpoint is kept: lower --lr"
        ),
    )
    out = tmp_path / "run"
    with pytest.raises(UserError, match="the run in .* keeps its last checkpoint"):
        train(out, checkpoint_every=3)
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "diverged" and "lower --lr" in config["hint"]
