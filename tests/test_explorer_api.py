"""The explorer's HTTP API: every endpoint, bad uploads, unknown ids, path traversal."""

from __future__ import annotations

import io
import json
import socket

import pytest
import torch
from torch import nn

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from visionzoo import runs as runs_mod  # noqa: E402
from visionzoo.explorer.data import Explorer  # noqa: E402
from visionzoo.explorer.server import MAX_UPLOAD_BYTES, create_app  # noqa: E402
from visionzoo.registry import create_model, list_models  # noqa: E402

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PRE = dict(image_size=32, in_channels=1, mean=[0.1307], std=[0.3081], resize=None, pad=2)


def make_run(root, name, model_name, **kwargs):
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_channels=1, **kwargs)
    metrics = [
        dict(epoch=e, train_loss=1.0 / e, train_acc=0.8 + 0.01 * e, test_loss=1.1 / e,
             test_acc=0.79 + 0.01 * e, lr=0.01, images_per_s=900.0, time_s=2.0)
        for e in (1, 2, 3)
    ]  # fmt: skip
    config = dict(
        model=model_name,
        model_kwargs=model.model_kwargs,
        dataset="mnist",
        class_names=CLASSES,
        preprocess={**PRE, "data_size": 28},
        recipe="test",
        seed=0,
        final_metrics=dict(test_acc=0.82),
    )
    return runs_mod.save_run(root / name, model, config, metrics)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("explorer")
    runs = base / "runs"
    make_run(runs, "lenet-mnist", "lenet5")
    if "vit_tiny_patch16" in list_models():
        make_run(runs, "vit/tiny", "vit_tiny_patch16", image_size=32, small_input=True)
    broken = make_run(runs, "broken", "lenet5_paper")
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)  # not safetensors
    running = make_run(runs, "paper-running", "lenet5_paper")
    cfg = json.loads((running / "config.json").read_text())
    cfg.update(recipe={"optimizer": "sgd", "epochs": 2, "lr": 0.05}, status="running")
    del cfg["final_metrics"]  # an unfinished run: its accuracy comes from metrics.jsonl
    (running / "config.json").write_text(json.dumps(cfg))
    odd = make_run(runs, "odd", "lenet5_paper")
    cfg = json.loads((odd / "config.json").read_text())
    cfg.update(preprocess=[1, 2], final_metrics={"test_acc": "high"})  # wrong types
    (odd / "config.json").write_text(json.dumps(cfg))
    (runs / "not-a-run").mkdir()
    (runs / "not-a-run" / "config.json").write_text("{not json")
    results = base / "results"
    (results / "bench").mkdir(parents=True)
    rows = [
        dict(model="lenet5", impl="visionzoo", mode="inference", batch_size=1, device="cpu",
             dtype="fp32", median_ms=0.25),
        dict(model="lenet5", impl="torchvision", mode="inference", batch_size=1, device="cpu",
             dtype="fp32", median_ms=0.1),  # a comparison, not ours
        dict(model="lenet5", impl="visionzoo", mode="inference", batch_size=16, device="cpu",
             dtype="fp32", median_ms=0.05),  # not batch 1
        dict(model="lenet5", impl="visionzoo", mode="train", batch_size=1, device="cpu",
             dtype="fp32", median_ms=0.01),  # a training step
    ]  # fmt: skip
    env = {"cpu": "test CPU", "cuda_device": None}
    (results / "bench" / "cpu.json").write_text(json.dumps({"environment": env, "results": rows}))
    (results / "lab").mkdir()
    claim = {"claim": "relu", "title": "ReLU trains faster", "models": ["lenet5"]}
    claim.update(verdict="holds", summary="5.1x fewer epochs", rule="ratio > 3", budget="quick")
    (results / "lab" / "relu.json").write_text(json.dumps(claim))
    Image.new("RGB", (8, 8), "red").save(results / "lab" / "relu.png")
    (results / "leaderboard").mkdir()
    board = {"family": "LeNet", "model": "lenet5", "dataset": "fashion-mnist", "device": "cpu",
             "published": None, "runs": [
                 {"seed": 0, "recipe": "small-cnn", "epochs": 30, "test_acc": 0.91,
                  "train_seconds": 80.0},
                 {"seed": 1, "recipe": "small-cnn", "epochs": 30, "test_acc": 0.92,
                  "train_seconds": 90.0}]}  # fmt: skip
    (results / "leaderboard" / "lenet5.json").write_text(json.dumps(board))
    (results / "leaderboard" / "alexnet.json").write_text('{"model": "alexnet", "runs": []}')
    (results / "leaderboard" / "vgg11.json").write_text("{broken")
    return runs, results


@pytest.fixture(scope="module")
def client(dirs, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("VISIONZOO_CACHE", str(tmp_path_factory.mktemp("cache")))  # not the user's cache
    app = create_app(*dirs)
    with TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as c:
        yield c
    mp.undo()


def png(w=40, h=30, mode="RGB", colour="white") -> bytes:
    buf = io.BytesIO()
    img = Image.new(mode, (w, h), colour)
    img.paste(Image.new(mode, (w // 2, h // 2), "black" if mode != "1" else 0), (w // 4, h // 4))
    img.save(buf, format="PNG")
    return buf.getvalue()


def assert_error(r, status, words=""):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert "Traceback" not in body["error"] and 'File "' not in body["error"]
    assert words.lower() in body["error"].lower()


# --- page and static files ------------------------------------------------------------------


def test_page_and_assets(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "static/app.js" in r.text and "window.VZ_STATIC = false" in r.text
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert len(js.content) > 1_000_000  # the real plotly bundle, served from the package
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


# --- models ---------------------------------------------------------------------------------


def test_models_overview(client):
    data = client.get("/api/models").json()
    rows = {m["name"]: m for m in data["models"]}
    assert set(rows) == set(list_models())
    years = [m["year"] for m in data["models"]]
    assert years == sorted(years)
    lenet = rows["lenet5"]
    assert lenet["reference_params"] == 61_706 and lenet["family"] == "LeNet"
    assert lenet["run_acc"] == {"test_acc": 0.82, "dataset": "mnist", "id": "lenet-mnist"}
    assert lenet["bench"]["latency_ms"] == 0.25
    assert lenet["bench"]["device"] == "cpu (test CPU), fp32"
    assert lenet["claims"] == ["relu"]
    measured = lenet["measured"]  # the leaderboard: mean and SD over seeds, trained here
    assert measured["test_acc"] == pytest.approx(0.915) and measured["seeds"] == 2
    assert measured["sd"] == pytest.approx(0.00707, abs=1e-4) and measured["train_s"] == 85.0
    assert measured["dataset"] == "fashion-mnist" and measured["file"] == "lenet5.json"
    assert "measured" not in rows["alexnet"] and "measured" not in rows["vgg11"]  # no runs; bad
    assert data["lab"][0]["title"] == "ReLU trains faster"
    assert "LeNet" in data["families"]


def test_model_card(client):
    card = client.get("/api/models/lenet5").json()
    assert card["name"] == "lenet5" and card["year"] == 1998
    assert card["paper"].startswith("Gradient-Based Learning")
    assert card["key_idea"] and card["notes"] and all(isinstance(n, str) for n in card["notes"])
    assert card["module"] == "visionzoo.models.lenet"
    assert [r["id"] for r in card["runs"]] == ["lenet-mnist"]
    assert card["claims"][0]["verdict"] == "holds"
    assert card["measured"]["test_acc"] == pytest.approx(0.915)
    assert client.get("/api/models/alexnet").json()["measured"] is None


def test_profile(client):
    p = client.get("/api/models/lenet5/profile").json()
    assert p["params"] == 61_706 and p["flops"] > 0 and p["depth"] > 0
    assert p["stages"] and {"name", "output_shape", "params", "flops"} <= set(p["stages"][0])
    # now cached, the overview carries it too
    row = next(m for m in client.get("/api/models").json()["models"] if m["name"] == "lenet5")
    assert row["profile"]["params"] == 61_706


def test_diagram(client):
    d = client.get("/api/models/lenet5/diagram").json()
    assert d["svg"].startswith("<svg") and "Conv 5×5, 6" in d["svg"]
    assert "Linear 84→10" in d["svg"] and {"kind", "label", "colour"} <= set(d["legend"][0])


def test_lab_claims_and_plot(client):
    claims = client.get("/api/lab").json()["claims"]
    assert claims[0]["id"] == "relu" and claims[0]["rule"] == "ratio > 3" and claims[0]["has_plot"]
    r = client.get("/api/lab/relu/plot.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")
    assert_error(client.get("/api/lab/nope/plot.png"), 404, "no plot")
    assert client.get("/api/lab/..%2Fbench%2Fcpu/plot.png").status_code == 404


def test_source_comes_from_the_registry_module(client):
    s = client.get("/api/models/lenet5/source").json()
    assert (
        s["module"] == "visionzoo.models.lenet" and "class LeNet5(ImageClassifier)" in s["source"]
    )


@pytest.mark.parametrize("suffix", ["", "/profile", "/diagram", "/source"])
def test_unknown_model(client, suffix):
    assert_error(client.get(f"/api/models/resnet5000{suffix}"), 404, "unknown model")


@pytest.mark.parametrize(
    "path",
    [
        "/api/models/..%2F..%2Fetc%2Fpasswd/source",
        "/api/models/%2e%2e%2fregistry/source",
        "/api/runs/..%2F..%2Fetc%2Fpasswd",
        "/api/runs/%2e%2e",
        "/api/runs/..",
        "/api/runs/%2Fetc%2Fpasswd",
        "/api/runs/vit%2Ftiny",
        "/static/..%2Fserver.py",
        "/static/../data.py",
        "/api/runs/lenet-mnist%2F..%2F..%2Fconfig.json",
    ],
)
def test_no_path_from_the_browser_is_opened(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert "root:" not in r.text and "import " not in r.text


def test_unknown_route_is_json(client):
    assert_error(client.get("/api/nothing"), 404, "not found")


# --- runs -----------------------------------------------------------------------------------


def test_runs_listing_and_detail(client, dirs):
    runs = client.get("/api/runs").json()["runs"]
    ids = {r["id"] for r in runs}
    assert "lenet-mnist" in ids and "not-a-run" not in ids  # broken JSON is skipped
    odd = next(r for r in runs if r["id"] == "odd")  # listed; the odd values left out
    assert odd["image_size"] is None
    assert all("_path" not in r and str(dirs[0]) not in json.dumps(r) for r in runs)
    live = next(r for r in runs if r["id"] == "paper-running")
    assert live["recipe"] == "optimizer sgd, epochs 2, lr 0.05" and live["status"] == "running"
    assert live["test_acc"] == pytest.approx(0.82) and live["epochs"] == 3
    run = client.get("/api/runs/lenet-mnist").json()
    assert run["model"] == "lenet5" and run["class_names"] == CLASSES
    assert [m["epoch"] for m in run["metrics"]] == [1, 2, 3]
    assert run["config"]["preprocess"]["image_size"] == 32


def test_unknown_run(client):
    assert_error(client.get("/api/runs/nope"), 404, "unknown run")
    r = client.post("/api/runs/nope/predict", files={"file": ("a.png", png(), "image/png")})
    assert_error(r, 404, "unknown run")


# --- predictions ----------------------------------------------------------------------------


def test_predict_upload(client):
    r = client.post("/api/runs/lenet-mnist/predict", files={"file": ("a.png", png(), "image/png")})
    assert r.status_code == 200, r.text
    j = r.json()
    assert len(j["predictions"]) == 5 and {p["label"] for p in j["predictions"]} <= set(CLASSES)
    probs = [p["prob"] for p in j["predictions"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert j["input_shape"] == [1, 32, 32]
    assert [s["name"] for s in j["stages"]] == ["c1", "s2", "c3", "s4", "c5"]
    assert j["stages"][0]["shape"] == [6, 28, 28]
    assert all(s["png"].startswith("data:image/png;base64,") for s in j["stages"])
    assert j["explain"]["kind"] == "grad-cam" and j["explain"]["stage"] == "s4"
    assert j["input_png"].startswith("data:image/png;base64,")


def test_predict_raw_image_body_and_rgba(client):
    r = client.post(
        "/api/runs/lenet-mnist/predict",
        content=png(64, 64, "RGBA", (255, 255, 255, 255)),
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 5
    assert r.json()["warnings"] == []  # transparency is composited onto the run's background


def test_a_dark_object_on_white_is_flagged_for_a_light_on_black_dataset(client):
    r = client.post("/api/runs/lenet-mnist/predict", files={"file": ("a.png", png(), "image/png")})
    [warning] = r.json()["warnings"]
    assert warning["kind"] == "polarity" and "invert" in warning["message"]
    buf = io.BytesIO()  # a white square on black: as MNIST
    img = Image.new("L", (40, 30), 0)
    img.paste(255, (10, 7, 30, 22))
    img.save(buf, format="PNG")
    r = client.post("/api/runs/lenet-mnist/predict", files={"file": ("b.png", buf.getvalue())})
    assert r.status_code == 200 and r.json()["warnings"] == []
    scale = r.json()["colour_scale"]["stops"]
    assert len(scale) >= 2 and all(s.startswith("rgb(") for s in scale)


@pytest.mark.parametrize("colour", ["black", "white", (120, 30, 200)])
def test_a_blank_image_is_refused_politely(client, colour):
    buf = io.BytesIO()
    Image.new("RGB", (196, 196), colour).save(buf, format="PNG")
    r = client.post(
        "/api/runs/lenet-mnist/predict", files={"file": ("drawing.png", buf.getvalue())}
    )
    assert_error(r, 422, "blank")


def test_a_prediction_does_not_wait_for_a_profile(client, monkeypatch):
    """A profile computed in the worker holds no lock that predictions take."""
    import threading
    import time

    ex = client.app.state.explorer
    monkeypatch.setattr("visionzoo.explorer.data.shipped_profile", lambda name: None)
    ex._profiles.pop("vgg11", None)
    profiling = threading.Thread(target=ex.profile, args=("vgg11",), daemon=True)
    profiling.start()
    time.sleep(1.0)  # the worker process is starting or measuring
    started = time.perf_counter()
    r = client.post("/api/runs/lenet-mnist/predict", files={"file": ("a.png", png(), "image/png")})
    latency = time.perf_counter() - started
    assert r.status_code == 200
    assert profiling.is_alive(), "the profile finished first: the test proves nothing"
    assert latency < 2.0, f"the prediction took {latency:.2f} s"
    profiling.join(300)


def test_run_with_broken_weights(client):
    r = client.post("/api/runs/broken/predict", files={"file": ("a.png", png(), "image/png")})
    assert_error(r, 422, "cannot be loaded")


def test_attention_map_for_a_transformer(client):
    if "vit_tiny_patch16" not in list_models():
        pytest.skip("vit_tiny_patch16 is not registered")
    r = client.post("/api/runs/vit-tiny/predict", files={"file": ("a.png", png(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["explain"]["kind"] == "attention"


def test_malformed_uploads(client):
    url = "/api/runs/lenet-mnist/predict"
    assert_error(client.post(url, files={"file": ("a.png", b"not an image", "image/png")}), 400)
    assert_error(client.post(url, files={"file": ("a.png", png()[:40], "image/png")}), 400)
    assert_error(client.post(url, files={"file": ("a.png", b"", "image/png")}), 400, "empty")
    other = {"image": ("a.png", png(), "image/png")}
    assert_error(client.post(url, files=other), 400, "field 'file'")
    assert_error(client.post(url, data={"file": "x"}), 415)  # a url-encoded form
    assert_error(client.post(url, content=b"hello", headers={"content-type": "text/plain"}), 415)
    broken = b"--XX\r\nContent-Disposition: form-data; name=file\r\n\r\nabc"  # never closed
    r = client.post(
        url, content=broken, headers={"content-type": "multipart/form-data; boundary=XX"}
    )
    assert r.status_code == 400, r.text


def test_oversized_upload(client):
    big = b"\x89PNG" + b"0" * (MAX_UPLOAD_BYTES + 1)
    r = client.post("/api/runs/lenet-mnist/predict", files={"file": ("big.png", big, "image/png")})
    assert_error(r, 413, "too large")
    r = client.post(
        "/api/runs/lenet-mnist/predict", content=big, headers={"content-type": "image/png"}
    )
    assert_error(r, 413, "too large")


def test_decompression_bomb_is_refused_before_decoding(client):
    bomb = io.BytesIO()
    Image.new("1", (6_000, 6_000), 0).save(bomb, format="PNG")  # 36 MP in a few kB
    assert len(bomb.getvalue()) < 100_000
    r = client.post(
        "/api/runs/lenet-mnist/predict", files={"file": ("bomb.png", bomb.getvalue(), "image/png")}
    )
    assert_error(r, 413, "too large")


# --- diagrams of the structures the card must show ------------------------------------------


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)

    def forward(self, x):
        return x + self.dw(self.conv(x))


class _Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(8, 4, 1)
        self.b2 = nn.Sequential(nn.Conv2d(8, 4, 1), nn.Conv2d(4, 4, 3, padding=1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x)], 1)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(_Residual(), _Residual(), _Branches())
        self.fc = nn.Linear(8, 5)

    def forward_features(self, x):
        return self.blocks(self.stem(x))

    def forward_head(self, x):
        return self.fc(x.mean((2, 3)))


def test_diagram_shows_shortcuts_concatenation_branches_and_depthwise():
    from visionzoo.explorer.diagram import model_diagram

    d = model_diagram(_Toy(), torch.randn(1, 3, 16, 16))
    assert d["traced"]
    assert "Conv 3×3, 8 /2 · BN · ReLU" in d["svg"]  # norm and activation folded in
    assert "_Residual ×2" in d["svg"]  # repeated blocks collapse
    blocks = {b["name"]: b["svg"] for b in d["blocks"]}
    assert 'class="n add"' in blocks["_Residual"] and "skip" in blocks["_Residual"]
    assert "DW Conv 3×3, 8" in blocks["_Residual"]
    assert 'class="n concat"' in blocks["_Branches"] and blocks["_Branches"].count("Conv 1×1") == 2


def test_diagram_shows_vit_patch_tokens():
    if "vit_tiny_patch16" not in list_models():
        pytest.skip("vit_tiny_patch16 is not registered")
    from visionzoo.explorer.diagram import model_diagram

    model = create_model("vit_tiny_patch16", image_size=32, small_input=True).eval()
    d = model_diagram(model, torch.randn(1, 3, 32, 32))
    assert "patches →" in d["svg"] and "cls_token (learned)" in d["svg"]
    assert "EncoderBlock ×12" in d["svg"]
    assert any(b["name"] == "EncoderBlock" and "skip" in b["svg"] for b in d["blocks"])


# --- export and command line ----------------------------------------------------------------


def test_static_export(dirs, tmp_path, monkeypatch):
    from visionzoo.explorer.export import export_site

    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))
    out = export_site(tmp_path / "site", Explorer(*dirs), models=["lenet5"], log=lambda s: None)
    assert "window.VZ_STATIC = true" in (out / "index.html").read_text()
    assert (out / "static" / "plotly.min.js").stat().st_size > 1_000_000
    models = json.loads((out / "api" / "models.json").read_text())
    assert [m["name"] for m in models["models"]] == ["lenet5"]
    card = json.loads((out / "api" / "models" / "lenet5.json").read_text())
    assert card["name"] == "lenet5"
    assert json.loads((out / "api" / "models" / "lenet5" / "diagram.json").read_text())["svg"]
    runs = json.loads((out / "api" / "runs.json").read_text())
    assert runs["live"] is False and "lenet-mnist" in {r["id"] for r in runs["runs"]}
    assert (out / "api" / "runs" / "lenet-mnist.json").is_file()
    assert (out / "api" / "lab" / "relu" / "plot.png").is_file()


def test_explore_command(dirs, tmp_path, monkeypatch, capsys):
    from visionzoo.cli import main

    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))
    runs, results = dirs
    argv = ["explore", "--runs", str(runs), "--results", str(results)]
    assert main([*argv, "--export", str(tmp_path / "s"), "--models", "lenet5_paper"]) == 0
    assert (tmp_path / "s" / "api" / "models" / "lenet5_paper.json").is_file()
    assert main([*argv, "--port", "70000"]) == 2
    assert "not a TCP port" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main([*argv, "--port", str(taken.getsockname()[1])]) == 2
    assert "choose another --port" in capsys.readouterr().err


def test_grad_cam_falls_back_to_the_features_when_stage_hooks_never_fire():
    from visionzoo.explorer.insight import grad_cam
    from visionzoo.models.base import FeatureInfo

    class Bypass(nn.Module):  # calls its stage's layer directly, as CSWin does
        def __init__(self) -> None:
            super().__init__()
            self.stage = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))
            self.fc = nn.Linear(4, 3)
            self.num_features, self.feature_info = 4, [FeatureInfo("stage", 4, 1)]

        def forward_features(self, x):
            return self.stage[0](x)

        def forward_head(self, x):
            return self.fc(x.mean((2, 3)))

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    cam = grad_cam(Bypass(), torch.randn(1, 1, 8, 8), target=1)
    assert cam["stage"] == "forward_features" and cam["heat"].shape == (8, 8)
    assert 0 <= float(cam["heat"].min()) and float(cam["heat"].max()) <= 1
