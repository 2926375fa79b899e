"""The explorer in headless Chromium: click a bar, switch the metric, upload, draw, compare;
at 1440x900 and at a phone's 390x844, where nothing may overflow the viewport's width; and
the server's memory after every model card and every chart metric has been opened.

Screenshots go to test-artifacts/ (gitignored). Needs /usr/bin/chromium (Debian's package;
`make test` installs it) and the playwright Python package; never `playwright install`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")
from PIL import Image  # noqa: E402
from torchvision.models import resnet18  # noqa: E402

from visionzoo import runs as runs_mod  # noqa: E402
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
    # one set of ImageNet weights in torchvision's cache, for the pretrained gallery (random
    # values under the published file name: nothing is downloaded)
    mp.setenv("TORCH_HOME", str(base / "torch"))
    (base / "torch/hub/checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet18().state_dict(), base / "torch/hub/checkpoints/resnet18-f37072fd.pth")
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
    (base / "results/leaderboard").mkdir(parents=True)
    board = {"family": "LeNet", "model": "lenet5", "dataset": "fashion-mnist", "device": "cpu",
             "published": None, "runs": [{"seed": s, "recipe": "small-cnn", "epochs": 30,
                                          "test_acc": a, "train_seconds": 80.0}
                                         for s, a in ((0, 0.91), (1, 0.92))]}  # fmt: skip
    (base / "results/leaderboard/lenet5.json").write_text(json.dumps(board))
    app = create_app(base / "runs", base / "results")
    sock = socket.socket()  # bound here and handed to uvicorn: no other process can take it
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the explorer server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", app.state.explorer
    srv.should_exit = True
    thread.join(10)
    sock.close()
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
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})  # shares plotly's cache
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def phone_context(browser):
    ctx = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    yield ctx
    ctx.close()


def _page(context):
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    pg.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(context):
    yield from _page(context)


@pytest.fixture
def phone(phone_context):
    yield from _page(phone_context)


def open_page(page, url, static_header=True):
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    if static_header:
        page.add_style_tag(content="header { position: static; }")  # keep it out of screenshots


# Elements wider than the viewport, except inside a box that scrolls or clips them itself.
OVERFLOW_JS = """() => {
  const vw = document.documentElement.clientWidth, out = [];
  const clipped = (el) => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement)
      if (getComputedStyle(p).overflowX !== "visible") return true;
    return false;
  };
  for (const el of document.querySelectorAll("body *")) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    if (r.right > vw + 1 && !clipped(el)) {  // off-screen to the left is hiding, not overflow
      const name = `${el.tagName.toLowerCase()}#${el.id}`;
      out.push(`${name} ${Math.round(r.left)}..${Math.round(r.right)}`);
    }
  }
  return { scrollWidth: document.documentElement.scrollWidth, vw, out: out.slice(0, 12) };
}"""


def assert_no_overflow(page, where):
    got = page.evaluate(OVERFLOW_JS)
    assert got["scrollWidth"] <= got["vw"], f"{where}: page scrolls sideways: {got}"
    assert not got["out"], f"{where}: elements overflow the viewport: {got['out']}"


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmRSS")


# A server in a process of its own, for its memory: the test process holds whatever earlier
# tests allocated. It binds port 0 itself and prints the port, so no other process can race.
SERVE = """
import socket, sys, uvicorn
from visionzoo.explorer.server import create_app
app = create_app(sys.argv[1], sys.argv[2])
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
"""


@pytest.fixture(scope="module")
def server_process(server):
    explorer = server[1]
    folders = [str(explorer.runs_root), str(explorer.results_root)]
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, *folders], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(proc.stdout.readline())
        deadline = time.monotonic() + 30
        while True:  # the port is bound before uvicorn serves: wait for an answer
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the explorer server process did not start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


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
    trained = page.locator("#card .fact.measured").inner_text()  # beside the reported top-1
    assert "91.50 %" in trained and "2 seeds" in trained and "fashion-mnist" in trained
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

    page.select_option("#metric", "measured")  # the leaderboard, trained here
    page.wait_for_function("location.hash.includes('metric=measured')")
    bars = page.evaluate("document.getElementById('chart-bars').data.map(t => [t.customdata, t.y])")
    assert bars == [[["lenet5"], [pytest.approx(91.5)]]]


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


# --- layout at both sizes ---------------------------------------------------------------------


def test_desktop_layout_header_titles_and_family_order(server, page):
    url, _ = server
    open_page(page, url, static_header=False)  # the sticky header, as a user has it
    assert_no_overflow(page, "overview 1440")
    order = page.evaluate(
        """() => document.getElementById('chart-bars').data
                 .find(t => t.name === 'ResNet').customdata"""
    )
    assert order.index("resnet18") < order.index("resnet50") < order.index("resnet101")
    page.select_option("#metric", "top1")
    assert "not measured here" in page.locator("#bars-warning").inner_text()
    assert page.locator("#bars-title").is_visible()
    page.locator("#overview").screenshot(path=str(ARTIFACTS / "desktop-1440-overview.png"))

    page.select_option("#model-select", "convnext_tiny")
    page.wait_for_selector("#card .card-head[data-model='convnext_tiny']")
    page.wait_for_selector("#card-diagram svg.arch")
    page.wait_for_timeout(300)
    header = page.locator("header").bounding_box()
    head = page.locator("#card .card-head").bounding_box()
    assert head["y"] >= header["y"] + header["height"], "the sticky header covers the card title"
    assert page.locator("#card-compare").is_visible()
    assert "defining block" in page.locator("#card-diagram").inner_text()
    assert_no_overflow(page, "card 1440")
    page.screenshot(path=str(ARTIFACTS / "desktop-1440-card.png"))


def test_timeline_opens_the_family_flagship(server, page):
    url, _ = server
    open_page(page, url)
    data = page.evaluate("document.getElementById('chart-timeline').data[0]")
    i = data["y"].index("ResNet")
    assert data["customdata"][i] == "resnet50"
    point = page.locator("#chart-timeline g.points path.point").nth(i)
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#card .card-head[data-model='resnet50']")


def test_phone_layout_has_no_sideways_scroll(server, phone, tmp_path):
    url, _ = server
    open_page(phone, url + "#model=swin_t&compare=resnet50,convnext_tiny&run=lenet-mnist")
    phone.wait_for_selector("#card-diagram svg.arch")
    phone.wait_for_selector("#compare-body table.cmp-table")
    assert_no_overflow(phone, "overview 390")
    phone.locator("#overview").screenshot(path=str(ARTIFACTS / "phone-390-overview.png"))
    phone.locator("#card").screenshot(path=str(ARTIFACTS / "phone-390-card.png"))
    phone.locator("#compare").screenshot(path=str(ARTIFACTS / "phone-390-compare.png"))
    cmp = phone.locator("#compare-body table.cmp-table").inner_text()
    assert "px" in cmp and "year" in cmp
    ratios = phone.locator("#compare-body td.ratio").all_inner_texts()
    assert sum(bool(r) for r in ratios) >= 3 and not ratios[1] and not ratios[-1]  # not year/px

    img = tmp_path / "one.png"
    im = Image.new("L", (60, 60), 0)
    im.paste(255, (25, 10, 35, 50))
    im.save(img)
    phone.set_input_files("#upload", str(img))
    phone.wait_for_selector("#inside-result .pred")
    assert_no_overflow(phone, "inside 390")
    phone.locator("#inside").screenshot(path=str(ARTIFACTS / "phone-390-inside.png"))
    phone.screenshot(path=str(ARTIFACTS / "phone-390-top.png"))


def test_prediction_reasons_invert_blank_and_colour_scale(server, page, tmp_path):
    url, _ = server
    open_page(page, url + "#run=lenet-mnist")
    img = tmp_path / "dark-on-white.png"
    im = Image.new("L", (60, 60), 255)
    im.paste(0, (25, 10, 35, 50))  # a dark "1" on white: the opposite of MNIST
    im.save(img)
    page.set_input_files("#upload", str(img))
    page.wait_for_selector("#inside-result .warning[data-kind='polarity']")
    assert "invert" in page.locator("#inside-result .warning").inner_text()
    assert page.locator("#inside-result .scale i").count() == 2  # Grad-CAM and feature maps
    page.locator("#inside").screenshot(path=str(ARTIFACTS / "desktop-1440-polarity.png"))
    page.click("#inside-result button.invert")
    page.wait_for_function(
        "document.getElementById('inside-status').innerText.includes('inverted')"
    )
    page.wait_for_selector("#inside-result .pred")
    assert page.locator("#inside-result .warning").count() == 0

    page.click("#draw-clear")
    page.click("#draw-predict")  # a blank canvas
    page.wait_for_selector("#inside-status .note")
    assert "Nothing to classify" in page.locator("#inside-status").inner_text()
    assert page.locator("#inside-result .pred").count() == 0

    page.set_input_files("#upload", str(img))  # the same file again still runs
    page.wait_for_selector("#inside-result .pred")


@pytest.mark.slow
def test_memory_after_every_card_and_every_metric(server_process, page):
    url, pid = server_process
    open_page(page, url)
    metrics = page.evaluate("Array.from(document.querySelectorAll('#metric option'), o => o.value)")
    for metric in metrics:
        page.select_option("#metric", metric)
        page.wait_for_function(f"location.hash.includes('metric={metric}')")
    names = page.evaluate("S.models.map(m => m.name)")
    started = time.monotonic()
    drawn = 0
    for name in names:
        page.evaluate("(n) => openCard(n, false)", name)
        page.wait_for_function(
            """(n) => document.querySelector('#card .card-head')?.dataset.model === n &&
                 document.querySelector('#card-diagram svg.arch, #card-diagram .error')""",
            arg=name,
            timeout=120_000,
        )
        drawn += page.evaluate("document.querySelector('#card-diagram svg.arch') !== null")
    rss = rss_bytes(pid)
    (ARTIFACTS / "explorer-rss.txt").write_text(
        f"{len(names)} cards ({drawn} diagrams drawn), {len(metrics)} metrics, "
        f"{time.monotonic() - started:.0f} s: server RSS {rss / 2**20:.0f} MiB\n"
    )
    assert drawn == len(names)
    assert rss < 1.5 * 2**30, f"server RSS {rss / 2**20:.0f} MiB after the sweep"


def test_pretrained_gallery_at_both_sizes(server, page, phone, tmp_path):
    """One photo through every cached architecture: a card each with its top-5 and latency."""
    url, _ = server
    img = tmp_path / "photo.png"
    Image.new("RGB", (96, 72), (200, 120, 40)).save(img)
    for pg, name in ((page, "desktop-1440"), (phone, "phone-390")):
        open_page(pg, url)
        pg.wait_for_function(
            "document.getElementById('gallery-info').textContent.includes('resnet18')"
        )
        assert "How to get more models" in pg.locator("#gallery-info").inner_text()
        pg.set_input_files("#gallery-upload", str(img))
        pg.wait_for_selector("#gallery-grid .gcard ol")
        cards = pg.locator("#gallery-grid .gcard")
        assert cards.count() == 1 and "resnet18" in cards.first.inner_text()
        assert pg.locator("#gallery-grid .gcard ol li").count() == 5
        assert " ms" in cards.first.inner_text()
        assert_no_overflow(pg, f"gallery {name}")
        pg.locator("#gallery").screenshot(path=str(ARTIFACTS / f"{name}-gallery.png"))
