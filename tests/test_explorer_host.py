"""Only this machine's names reach the explorer (DNS rebinding), and HEAD works as GET."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from visionzoo.explorer.server import HostCheck, allowed_hosts, create_app, host_name  # noqa: E402

ROUTES = ["/", "/api/models", "/api/runs", "/api/models/lenet5/source", "/static/app.js"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(tmp_path_factory.mktemp("runs"), None)


def _get(app, host, path="/api/runs", method="GET"):
    with TestClient(app, base_url=f"http://{host}") as c:
        return c.request(method, path)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "localhost:8000", "[::1]:8000"])
def test_loopback_names_are_served(app, host):
    assert _get(app, host).status_code == 200


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example"])
def test_other_names_are_refused(app, host, path):
    r = _get(app, host, path)
    assert r.status_code == 421, (host, path)
    assert set(r.json()) == {"error"} and "answers to" in r.json()["error"]


def test_the_host_given_to_serve_is_served(tmp_path):
    app = create_app(tmp_path, None, host="192.168.1.20")
    assert _get(app, "192.168.1.20:8000").status_code == 200
    assert _get(app, "evil.example").status_code == 421
    assert "[fe80::1]" in allowed_hosts("fe80::1")


def test_a_request_without_a_host_header_is_refused():
    sent: list[dict] = []

    async def inner(scope, receive, send):  # never reached
        raise AssertionError("the app must not see the request")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    asyncio.run(HostCheck(inner, allowed_hosts())(scope, None, send))
    assert sent[0]["status"] == 400 and b"Host" in sent[1]["body"]


def test_host_name_parsing():
    assert host_name("LocalHost:8000") == "localhost"
    assert host_name("[::1]:8000") == "[::1]" and host_name("[::1]") == "[::1]"
    assert host_name("127.0.0.1") == "127.0.0.1"
    assert host_name("[::1") == ""


@pytest.mark.parametrize("path", ROUTES)
def test_head_works_where_get_does(app, path):
    get, head = _get(app, "127.0.0.1", path), _get(app, "127.0.0.1", path, "HEAD")
    assert get.status_code == head.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]


def test_head_on_an_unknown_route_is_404(app):
    assert _get(app, "127.0.0.1", "/nope", "HEAD").status_code == 404
