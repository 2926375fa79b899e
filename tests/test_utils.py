"""visionzoo.utils: atomic writes, the git state, the machine description."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from visionzoo.utils import (
    GitState,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    cpu_flags,
    cpu_model,
    git_state,
)


def test_atomic_write_json_converts_paths_dtypes_and_tuples(tmp_path):
    path = tmp_path / "sub" / "c.json"
    atomic_write_json(path, {"p": Path("a/b"), "dtype": torch.float16, "t": (1, 2)})
    assert json.loads(path.read_text()) == {"p": "a/b", "dtype": "torch.float16", "t": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["c.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "c.txt"
    atomic_write_text(path, "old")

    def half(f):
        f.write(b"new, half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, half)
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_reports_commit_and_dirty_tree(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    assert git_state(tmp_path) == GitState(None, None)  # not a repository
    git("init", "-q")
    (tmp_path / "f.txt").write_text("1")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    clean = git_state(tmp_path)
    assert clean.commit is not None and len(clean.commit) == 40 and clean.dirty is False
    (tmp_path / "f.txt").write_text("2")
    assert git_state(tmp_path) == GitState(clean.commit, True)


def test_cpu_description():
    assert cpu_model().strip()
    flags = cpu_flags()
    assert isinstance(flags, set) and all(" " not in f for f in flags)
