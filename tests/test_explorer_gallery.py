"""The explorer's pretrained gallery: cached torchvision weights only, offline, one upload."""

from __future__ import annotations

import io
import socket

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from visionzoo.explorer.data import Explorer  # noqa: E402
from visionzoo.explorer.server import create_app  # noqa: E402
from visionzoo.pretrained import _NETWORK, classify_images  # noqa: E402

FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "mobilenet_v3_small": "mobilenet_v3_small-047dcff4.pth",
}


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the gallery touched the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    _NETWORK.clear()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VISIONZOO_HOME", str(tmp_path / "vz"))
    yield
    _NETWORK.clear()


def place(tmp_path, names):
    import torchvision

    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None)
        torch.save(model.state_dict(), folder / FILES[name])
    return folder


def client():
    app = create_app(explorer=Explorer(None, None))
    return TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


def png(path=None):
    img = Image.new("RGB", (64, 48))
    for x in range(64):
        for y in range(48):
            img.putpixel((x, y), (x * 4, y * 5, (x * y) % 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    if path is not None:
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_expected_file_names_are_torchvisions():
    from visionzoo.explorer.gallery import expected_files

    files = {e["model"]: e["file"] for e in expected_files()}
    for name, file in FILES.items():
        assert files[name] == file


def test_empty_cache_lists_nothing_and_says_how(tmp_path):
    body = client().get("/api/gallery").json()
    assert body["models"] == []
    assert "visionzoo predict" in body["how_to"]["text"]
    assert body["how_to"]["folder"] == str(tmp_path / "torch" / "hub" / "checkpoints")
    assert any(m["file"] == FILES["resnet18"] for m in body["missing"])
    result = client().post("/api/gallery/predict", files={"file": ("a.png", png(), "image/png")})
    assert result.status_code == 200
    assert result.json()["results"] == []


def test_gallery_lists_and_predicts_the_cached_models(tmp_path):
    from torchvision.models import ResNet18_Weights

    place(tmp_path, FILES)
    c = client()
    body = c.get("/api/gallery").json()
    assert [m["model"] for m in body["models"]] == ["resnet18", "mobilenet_v3_small"]  # by year
    assert {m["model"] for m in body["missing"]}.isdisjoint(FILES)

    photo = tmp_path / "photo.png"
    data = png(photo)
    r = c.post("/api/gallery/predict", files={"file": ("photo.png", data, "image/png")})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [row["model"] for row in results] == ["resnet18", "mobilenet_v3_small"]
    classes = set(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    for row in results:
        assert "error" not in row, row
        assert len(row["top"]) == 5
        assert all(t["name"] in classes for t in row["top"])
        probs = [t["p"] for t in row["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert row["latency_ms"] >= 0
        # the CLI's code path (`visionzoo predict MODEL --weights torchvision photo.png`)
        cli = classify_images(row["model"], "torchvision", [photo], topk=5)[0]
        assert row["top"][0]["name"] == cli[0][0]
        assert row["top"][0]["p"] == pytest.approx(cli[0][1], abs=1e-5)


def test_gallery_upload_keeps_the_limits_and_host_check(tmp_path):
    c = client()
    r = c.post(
        "/api/gallery/predict", content=b"not an image", headers={"content-type": "image/png"}
    )
    assert r.status_code == 400
    r = c.post("/api/gallery/predict", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = c.post(
        "/api/gallery/predict",
        content=b"\0" * 64,
        headers={"content-type": "image/png", "content-length": str(11 * 2**20)},
    )
    assert r.status_code == 413
    r = c.get("/api/gallery", headers={"host": "evil.example"})
    assert r.status_code == 421


class Forbidden:
    def __enter__(self):
        raise AssertionError("the gallery took an explorer lock")

    def __exit__(self, *exc):
        return False

    acquire = __enter__


def test_gallery_takes_no_explorer_lock(tmp_path):
    place(tmp_path, ["mobilenet_v3_small"])
    ex = Explorer(None, None)
    for name in ("_predict_lock", "_diagram_lock", "_index_lock"):
        setattr(ex, name, Forbidden())
    app = create_app(explorer=ex)
    c = TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    r = c.post("/api/gallery/predict", files={"file": ("a.png", png(), "image/png")})
    assert r.status_code == 200, r.text
    assert [row["model"] for row in r.json()["results"]] == ["mobilenet_v3_small"]
