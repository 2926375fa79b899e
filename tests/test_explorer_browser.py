"""The explorer in headless Chromium: click a bar, switch the metric, upload, draw, compare.

Screenshots go to test-artifacts/ (gitignored). Needs /usr/bin/chromium (Debian's package;
`make test` installs it) and the playwright Python package; never `playwright install`.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")
runs_mod = pytest.importorskip("visionzoo.runs")
pytest.importorskip("visionzoo.predict")

from PIL import Image  # noqa: E402

from visionzoo.explorer.server import create_app  # noqa: E402
from visionzoo.registry import create_model  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARGS += ["--disable-component-update"]
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser")
    mp = pytest.MonkeyPatch()
    mp.setenv("VISIONZOO_CACHE", str(base / "cache"))
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    pre = dict(image_size=32, in_channels=1, mean=[0.1307], std=[0.3081], resize=None, pad=2)
    metrics = [
        dict(epoch=e, train_loss=1.0 / e, train_acc=0.7 + 0.05 * e, test_loss=1.2 / e,
             test_acc=0.68 + 0.05 * e, lr=0.01, images_per_s=900.0, time_s=2.0)
        for e in (1, 2, 3, 4)
    ]  # fmt: skip
    config = dict(
        model="lenet5",
        model_kwargs=model.model_kwargs,
        dataset="mnist",
        class_names=CLASSES,
        preprocess={**pre, "data_size": 28},
        recipe="test",
        seed=0,
        final_metrics=dict(test_acc=0.88),
    )
    runs_mod.save_run(base / "runs" / "lenet-mnist", model, config, metrics)
    (base / "results").mkdir()
    app = create_app(base / "runs", base / "results")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the explorer server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", app.state.explorer
    srv.should_exit = True
    thread.join(10)
    mp.undo()


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def context(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 950})  # shares plotly's cache
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    pg.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def open_page(page, url):
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    page.add_style_tag(content="header { position: static; }")  # keep it out of screenshots


def click_bar(page, model):
    """Click the centre of `model`'s bar in the overview chart (a real mouse click)."""
    where = page.evaluate(
        """(name) => {
          const d = document.getElementById('chart-bars').data;
          for (let t = 0; t < d.length; t++) {
            const i = (d[t].customdata || []).indexOf(name);
            if (i >= 0) return [t, i];
          }
          return null;
        }""",
        model,
    )
    assert where, f"{model} has no bar"
    bar = page.locator("#chart-bars g.trace.bars").nth(where[0]).locator("g.point").nth(where[1])
    box = bar.bounding_box()
    plot = page.locator("#chart-bars .nsewdrag").first.bounding_box()  # the plotting area
    assert box and plot and box["y"] < plot["y"] + plot["height"]
    # On a log axis a bar's path starts far below the axis (log 0): click its visible part.
    bottom = min(box["y"] + box["height"], plot["y"] + plot["height"])
    page.mouse.click(box["x"] + box["width"] / 2, (max(box["y"], plot["y"]) + bottom) / 2)


def test_overview_click_bar_and_switch_metric(server, page):
    url, _ = server
    open_page(page, url)
    assert page.locator("#chart-bars g.trace.bars").count() > 0
    page.screenshot(path=str(ARTIFACTS / "explorer-overview.png"))

    click_bar(page, "lenet5")
    page.wait_for_selector("#card .card-head[data-model='lenet5']")
    assert page.locator("#card .params").inner_text() == "61,706"
    assert "model=lenet5" in page.url
    page.wait_for_selector("#card-diagram svg.arch")  # the diagram is drawn from the model
    page.wait_for_selector("#card-stages table")  # the stage table from profile_model
    assert "C1" in page.locator("#card .key-idea").inner_text() or page.locator(".notes li").count()
    page.locator("#card").screenshot(path=str(ARTIFACTS / "explorer-card-lenet5.png"))

    page.select_option("#metric", "run_acc")
    page.wait_for_function("location.hash.includes('metric=run_acc')")
    points = page.evaluate(
        "document.getElementById('chart-bars').data.flatMap(t => t.customdata || [])"
    )
    assert points == ["lenet5"]  # only lenet5 has a run
    assert "1 of" in page.locator("#metric-note").inner_text()
    ys = page.evaluate("document.getElementById('chart-bars').data.flatMap(t => t.y)")
    assert ys == [pytest.approx(88.0)]
    page.locator("#overview").screenshot(path=str(ARTIFACTS / "explorer-metric-run-acc.png"))


def test_upload_and_draw_show_predictions(server, page, tmp_path):
    url, _ = server
    open_page(page, url + "#run=lenet-mnist")
    assert page.locator("#run-select").input_value() == "lenet-mnist"
    img = tmp_path / "digit.png"
    Image.new("L", (60, 60), 0).save(img)
    im = Image.open(img)
    im.paste(255, (25, 10, 35, 50))  # a "1"
    im.save(img)
    page.set_input_files("#upload", str(img))
    page.wait_for_selector("#inside-result .pred")
    assert page.locator("#inside-result .pred").count() == 5
    labels = page.locator("#inside-result .pred span:first-child").all_inner_texts()
    assert set(labels) <= set(CLASSES)
    assert page.locator("#inside-result .stage img").count() == 5  # c1 s2 c3 s4 c5
    assert "Grad-CAM" in page.locator("#inside-result").inner_text()
    page.locator("#inside").screenshot(path=str(ARTIFACTS / "explorer-inside-upload.png"))

    page.locator("#draw").scroll_into_view_if_needed()
    canvas = page.locator("#draw").bounding_box()
    x, y = canvas["x"], canvas["y"]
    page.mouse.move(x + 98, y + 30)
    page.mouse.down()
    page.mouse.move(x + 98, y + 100, steps=5)
    page.mouse.move(x + 98, y + 170, steps=5)
    page.mouse.up()
    lit = page.evaluate(
        """() => { const c = document.getElementById('draw');
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] > 128; return n; }"""
    )
    assert lit > 500, "the stroke did not reach the canvas"
    page.evaluate("document.getElementById('inside-result').innerHTML = ''")
    page.click("#draw-predict")
    page.wait_for_selector("#inside-result .pred")
    assert "drawing.png" in page.locator("#inside-status").inner_text()
    page.locator("#inside").screenshot(path=str(ARTIFACTS / "explorer-inside-drawing.png"))


def test_compare_and_permalink(server, page):
    url, _ = server
    open_page(page, url + "#model=lenet5_paper&metric=top1&compare=lenet5,lenet5_paper")
    page.wait_for_selector("#card .card-head[data-model='lenet5_paper']")
    assert page.locator("#metric").input_value() == "top1"
    page.wait_for_selector("#compare-body table.cmp-table")
    table = page.locator("#compare-body table.cmp-table").inner_text()
    assert "61,706" in table and "60,000" in table
    page.locator("#compare").screenshot(path=str(ARTIFACTS / "explorer-compare.png"))

    page.select_option("#cmp-b", "lenet5")
    page.wait_for_function("location.hash.includes('compare=lenet5,lenet5')")
    assert page.url.count("model=lenet5_paper") == 1


def test_export_opens_in_the_browser(server, page, tmp_path):
    """The static site works over plain HTTP, without the API server."""
    import http.server

    from visionzoo.explorer.export import export_site

    _, explorer = server
    out = export_site(tmp_path / "site", explorer, ["lenet5"], log=lambda s: 0)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(out), **k
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        open_page(page, f"http://127.0.0.1:{httpd.server_address[1]}/#model=lenet5")
        page.wait_for_selector("#card .card-head[data-model='lenet5']")
        page.wait_for_selector("#card-diagram svg.arch")
        assert "static export" in page.locator("#mode").inner_text()
    finally:
        httpd.shutdown()
