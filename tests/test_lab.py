"""The history lab: claim listing, smoke runs of cheap claims, records, the report (the
statistics and gates are in test_lab_stats.py)."""

from __future__ import annotations

import json

import pytest

from visionzoo.cli import main
from visionzoo.lab import CLAIMS, VERDICTS

CHEAP = ("vgg", "lenet")  # lenet on `synthetic` trains one stand-in arm


@pytest.fixture(scope="module")
def lab_out(tmp_path_factory):
    """Smoke runs of two cheap claims on the synthetic dataset (no files needed)."""
    out = tmp_path_factory.mktemp("lab")
    for name in CHEAP:
        argv = ["lab", "run", name, "--budget", "smoke", "--dataset", "synthetic"]
        assert main([*argv, "--out", str(out), "--quiet"]) == 0
    return out


def test_list_shows_ten_claims(capsys):
    assert main(["lab", "list", "--out", "/nonexistent-lab-results"]) == 0
    text = capsys.readouterr().out
    assert len(CLAIMS) == 10
    for name in ("lenet", "alexnet", "vgg", "googlenet", "degradation", "densenet",
                 "separable", "efficientnet", "vit", "transfer"):  # fmt: skip
        assert name in CLAIMS and name in text


def test_claims_name_registered_models():
    from visionzoo.registry import list_models

    known = set(list_models())
    for c in CLAIMS.values():
        assert c.models and set(c.models) <= known, c.name
        assert c.quote and c.source and c.rule


@pytest.mark.parametrize("name", CHEAP)
def test_smoke_run_writes_json_png_and_verdict(lab_out, name):
    result = json.loads((lab_out / f"{name}-smoke.json").read_text())
    assert result["verdict"] in VERDICTS
    for key in ("claim", "summary", "models", "quote", "rule", "recipe", "scaled_down"):
        assert result[key], key
    assert result["budget"] == "smoke" and result["dataset"] == "synthetic"
    env = result["environment"]
    assert env["torch"] and env["torch_threads"] >= 1 and "git_commit" in env
    assert env["git_dirty"] in (True, False, None) and env["cpu"] and env["numpy"]
    assert "lab run" in result["command"] and result["seeds"] == list(range(len(result["seeds"])))
    for arm, cfg in result["arm_configs"].items():
        assert cfg["dataset"] == "synthetic" and cfg["model"] and cfg["epochs"] >= 1, arm
    assert "synthetic" in result["datasets"]
    if name == "lenet":  # the images the runs saw, not the subset asked for
        from visionzoo.data import load_dataset

        n = min(512, len(load_dataset("synthetic", "train").labels))
        assert f"on {n:,} synthetic images" in result["scaled_down"][0]
    runs = [run for arm in result["arms"].values() for run in arm]
    assert runs and all(0 <= r["final"]["test_acc"] <= 1 and r["curve"] for r in runs)
    png = (lab_out / result["plot"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_separable_counts_the_8_to_9x():
    from visionzoo.lab.claims.separable import measure_widths

    rows = measure_widths((1.0, 0.25), size=32, repeats=2)
    # MobileNet v1 with full 3x3 convolutions needs about 8.5x the multiply-adds (Table 4:
    # 4866M vs 569M at 224 px); at 32 px the classifier weighs more: about 8x.
    ratio = rows["standard a=1.0"]["macs"] / rows["separable a=1.0"]["macs"]
    assert 7.5 < ratio < 9.5
    assert rows["separable a=0.25"]["macs"] < rows["separable a=1.0"]["macs"] / 8
    for row in rows.values():
        lat = row["latency_ms"]
        assert 0 < lat["q1"] <= lat["median"] <= lat["q3"] and lat["repeats"] == 2


def test_lab_models_never_enter_the_registry(lab_out):
    from visionzoo.registry import list_models

    assert not [n for n in list_models() if n.startswith("lab_")]


def test_smoke_without_out_writes_to_a_temporary_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["lab", "run", "vgg", "--budget", "smoke", "--dataset", "synthetic", "--quiet"]
    assert main(argv) == 0
    assert not (tmp_path / "results").exists()
    assert "visionzoo-lab-smoke-" in capsys.readouterr().out


def test_an_existing_result_is_skipped_unless_forced(lab_out, capsys):
    argv = ["lab", "run", "vgg", "--budget", "smoke", "--dataset", "synthetic", "--quiet"]
    before = (lab_out / "vgg-smoke.json").stat().st_mtime_ns
    assert main([*argv, "--out", str(lab_out)]) == 0
    assert "result exists" in capsys.readouterr().out
    assert (lab_out / "vgg-smoke.json").stat().st_mtime_ns == before


def test_too_few_seeds_at_quick_is_a_user_error(capsys):
    assert main(["lab", "run", "vgg", "--budget", "quick", "--seeds", "2", "--out", "/tmp"]) == 2
    assert "--seeds must be >= 5" in capsys.readouterr().err


def test_report_builds_markdown_and_html(lab_out):
    assert main(["lab", "report", "--out", str(lab_out)]) == 0
    md = (lab_out / "REPORT.md").read_text()
    page = (lab_out / "REPORT.html").read_text()
    for name in CHEAP:
        assert f"## {name}" in md and f"id='{name}'" in page
    assert "Not run yet:" in md and "lenet" in md
    assert page.startswith("<!doctype html>") and "vgg-smoke.png" in page


def test_report_shows_the_verdict_at_both_budgets(lab_out, tmp_path):
    result = json.loads((lab_out / "vgg-smoke.json").read_text())
    (tmp_path / "vgg-smoke.json").write_text(json.dumps(result))
    (tmp_path / "vgg-full.json").write_text(json.dumps({**result, "budget": "full"}))
    assert main(["lab", "report", "--out", str(tmp_path)]) == 0
    row = next(x for x in (tmp_path / "REPORT.md").read_text().splitlines() if "[vgg]" in x)
    assert "| full |" in row and f"smoke: {result['verdict']}" in row
    assert result["primary"]["name"] in row


def test_unknown_claim_is_a_user_error(capsys):
    assert main(["lab", "run", "resnet-is-great", "--budget", "smoke"]) == 2
    assert "unknown claim" in capsys.readouterr().err


def test_each_claim_lives_in_its_own_file_and_returns_a_typed_result():
    import typing

    from visionzoo.lab.verdict import ClaimResult

    modules = {c.run.__module__ for c in CLAIMS.values()}
    assert len(modules) == len(CLAIMS)
    for c in CLAIMS.values():
        assert c.run.__module__.startswith("visionzoo.lab.claims."), c.name
        assert typing.get_type_hints(c.run)["return"] is ClaimResult, c.name
