"""The app (`python -m hrsam.app`): a real uvicorn server on a free port; bad input answered with
a 4xx and one line while the server keeps serving; a click sequence gives the mask an offline
replay gives; and real headless Chromium clicking on the page (Playwright)."""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import expect

from benchmarks.app_latency import click_pixel
from hrsam.app.__main__ import DEFAULT_HOST, parse_args
from hrsam.app.models import ImageEntry, ModelEntry, load
from hrsam.app.server import MAX_UPLOAD_BYTES, Engine, create_app, replay, runs
from hrsam.interactive.metrics import iou
from hrsam.models import Predictor, build_model, save_checkpoint
from tests.helpers import serve

ROOT = Path(__file__).resolve().parent.parent


def _scene(seed: int, h: int = 96, w: int = 128):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    gt = np.zeros((h, w), bool)
    gt[20:70, 30:90] = True
    image[gt] += 150
    return image, gt


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Two models (the same preset, two seeds: two trials to compare), two validation images."""
    tmp = tmp_path_factory.mktemp("app")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ckpt = save_checkpoint(build_model("hrsam_tiny"), tmp / f"m{seed}.pt")
        models.append(ModelEntry(f"trial{seed}", f"seed {seed}", "hrsam_tiny", str(ckpt), 128))
    images = [ImageEntry(f"val-{i}", f"scene{i}", *_scene(i)) for i in range(2)]
    (tmp / "uploads").mkdir()
    engine = Engine(models, images, tmp / "uploads")
    base, srv, thread = serve(create_app(engine))
    yield {"base": base, "engine": engine, "models": models, "tmp": tmp}
    srv.should_exit = True
    thread.join(timeout=10)


def _call(base: str, path: str, body=None, headers=None):
    if isinstance(body, bytes) and len(body) > MAX_UPLOAD_BYTES:  # the server answers first
        import http.client

        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.putrequest("POST", path)
        conn.putheader("content-length", str(len(body)))
        conn.endheaders()
        conn.send(body[:65536])
        r = conn.getresponse()
        return r.status, r.read()
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(base + path, data=data, headers=headers or {})
    if isinstance(body, dict):
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _from_runs(counts: list[int], shape) -> np.ndarray:
    """Run lengths (row-major, alternating, background first) back to a mask, run by run."""
    flat = np.zeros(int(np.prod(shape)), bool)
    i = 0
    for k, n in enumerate(counts):
        value = k % 2 == 1
        flat[i : i + n] = value
        i += n
    assert i == flat.size
    return flat.reshape(shape)


def test_run_lengths_give_back_the_mask():
    rng = np.random.default_rng(0)
    masks = [np.zeros((3, 4), bool), np.ones((3, 4), bool), rng.random((37, 23)) < 0.3]
    masks += [np.pad(np.ones((5, 5), bool), 2), ~np.pad(np.ones((5, 5), bool), 2)]
    for mask in masks:
        counts = runs(mask)
        assert all(n > 0 for n in counts[1:]) and sum(counts) == mask.size
        assert (counts[0] == 0) == bool(mask.flat[0])
        assert np.array_equal(_from_runs(counts, mask.shape), mask)


def test_the_app_binds_localhost_unless_told():
    assert DEFAULT_HOST == "127.0.0.1" and parse_args([]).host == "127.0.0.1"
    assert parse_args(["--host", "0.0.0.0"]).host == "0.0.0.0"


def _valid(base):
    body = {"model": "trial0", "image": "val-0", "clicks": [{"x": 60, "y": 45, "positive": True}]}
    status, data = _call(base, "/api/predict", body)
    assert status == 200, data
    return json.loads(data)


def test_bad_input_is_a_4xx_with_one_line_and_the_server_keeps_serving(server):
    base = server["base"]
    huge = Image.new("L", (5000, 4000))
    one = [{"x": 5, "y": 5, "positive": True}]
    cases = {
        "not an image": ("/api/upload", b"plain text, not an image", 400, "not a readable image"),
        "corrupt image": ("/api/upload", _png(_scene(0)[0])[:200], 400, "not a readable image"),
        "oversized upload": ("/api/upload", b"\0" * (MAX_UPLOAD_BYTES + 1), 413, "exceeds"),
        "too many pixels": ("/api/upload", _png(np.asarray(huge)), 413, "5000x4000 px exceeds"),
        "click outside": (
            "/api/predict",
            {"model": "trial0", "image": "val-0", "clicks": [{"x": 500, "y": 5, "positive": True}]},
            400,
            "click at x=500, y=5 is outside the 128x96 image",
        ),
        "unknown trial": (
            "/api/predict",
            {"model": "nope", "image": "val-0", "clicks": one},
            404,
            "unknown model 'nope'",
        ),
        "unknown image": (
            "/api/predict",
            {"model": "trial0", "image": "../../etc/passwd", "clicks": one},
            404,
            "unknown image '../../etc/passwd'",
        ),
        "no clicks": (
            "/api/predict", {"model": "trial0", "image": "val-0", "clicks": []}, 400, "no clicks"
        ),
        "not JSON": ("/api/predict", b"{x", 400, "send JSON"),
        "a string for a boolean": (
            "/api/predict",
            {"model": "trial0", "image": "val-0",
             "clicks": [{"x": 5, "y": 5, "positive": "false"}]},
            422,
            "clicks.0.positive: Input should be a valid boolean (got 'false')",
        ),
        "a negative coordinate": (
            "/api/predict",
            {"model": "trial0", "image": "val-0", "clicks": [{"x": -1, "y": 5, "positive": True}]},
            422,
            "clicks.0.x: Input should be greater than or equal to 0 (got -1)",
        ),
        "a missing field": (
            "/api/predict", {"model": "trial0", "clicks": one}, 422, "image: Field required"
        ),
        "an unknown field": (
            "/api/predict",
            {"model": "trial0", "image": "val-0", "clicks": one, "zoom": 2},
            422,
            "zoom: Extra inputs are not permitted (got 2)",
        ),
    }  # fmt: skip
    for name, (path, body, status, text) in cases.items():
        got, data = _call(base, path, body)
        detail = json.loads(data)["detail"]
        assert got == status, (name, got, detail)
        assert text in detail and "\n" not in detail, (name, detail)
        assert _valid(base)["iou"] is not None  # still serving
    assert list((server["tmp"] / "uploads").iterdir()) == []  # nothing kept of a bad upload


def test_openapi_lists_every_route_with_its_request_schema(server):
    base = server["base"]
    status, data = _call(base, "/openapi.json")
    assert status == 200
    spec = json.loads(data)
    routes = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes == {
        ("/", "get"), ("/api/models", "get"), ("/api/images", "get"),
        ("/api/images/{image_id}", "get"), ("/api/images/{image_id}/gt", "get"),
        ("/api/upload", "post"), ("/api/predict", "post"),
    }  # fmt: skip
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/PredictIn")
    schemas = spec["components"]["schemas"]
    assert set(schemas["ClickIn"]["required"]) == {"x", "y", "positive"}
    assert schemas["ClickIn"]["properties"]["positive"]["type"] == "boolean"
    assert "PredictOut" in schemas and "ImageOut" in schemas
    status, page = _call(base, "/docs")
    assert status == 200 and b"/openapi.json" in page


def test_a_click_sequence_gives_the_mask_an_offline_replay_gives(server):
    base, engine = server["base"], server["engine"]
    clicks = [(45, 60, True), (80, 20, False), (30, 40, True)]
    shown = []
    for k in range(1, len(clicks) + 1):
        body = {"model": "trial1", "image": "val-1",
                "clicks": [{"y": y, "x": x, "positive": p} for y, x, p in clicks[:k]]}  # fmt: skip
        status, data = _call(base, "/api/predict", body)
        assert status == 200, data
        shown.append(json.loads(data))
    assert [r["decoder_steps"] for r in shown] == [1, 1, 1]  # one decoder step per new click
    assert shown[0]["encoder_ms"] > 0 and shown[1]["encoder_ms"] == 0  # encoded once
    model = load(server["models"][1])
    predictor = Predictor(model, 128)
    image, gt = _scene(1)
    predictor.set_image(image)
    logits, _ = replay(predictor, clicks)
    offline = logits[0].float().numpy() > 0
    page = np.asarray(Image.open(io.BytesIO(base64.b64decode(shown[-1]["mask"])))) > 127
    assert np.array_equal(page, offline)
    # the page's format: the same mask as run lengths, and no PNG
    status, data = _call(base, "/api/predict", {**body, "mask_format": "runs"})
    assert status == 200, data
    answer = json.loads(data)
    assert answer["mask"] is None and answer["decoder_steps"] == 1  # from the cached prefix
    assert np.array_equal(_from_runs(answer["mask_runs"], offline.shape), offline)
    assert abs(shown[-1]["iou"] - iou(offline, gt)) < 1e-6
    assert engine.cache and len(engine.cache) <= engine.cache_size


# -- real headless Chromium ----------------------------------------------------------------------


@pytest.mark.external
@pytest.mark.slow
@pytest.mark.browser_context_args(viewport={"width": 1400, "height": 900})
def test_chromium_clicks_on_the_page_and_sees_the_offline_mask(server, page, tmp_path):
    base, models = server["base"], server["models"]
    page.goto(f"{base}/")
    page.locator("body[data-ready='yes']").wait_for(state="attached")
    page.locator("#compare").check()  # compare mode: both trials answer the same clicks
    expect(page.locator("canvas")).to_have_count(2)
    boxes = [page.locator(f"#canvas-{n}").bounding_box() for n in (0, 1)]
    assert boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"]  # side by side at 1400 px
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 1 and boxes[0]["width"] > 400
    ious, shown = [], []
    # the second click at 800%: the image scrolls in its frame, a click still names its pixel
    for k, (x, y, button, zoom) in enumerate([(60, 45, "left", "fit"), (20, 80, "right", "8")], 1):
        page.select_option("#zoom", zoom)
        page.locator(f"body[data-zoom='{zoom}']").wait_for(state="attached")
        before = page.evaluate("document.getElementById('canvas-0').toDataURL()")
        click_pixel(page, "canvas-0", x, y, button)
        page.locator(f"body[data-clicks='{k}'][data-state='idle']").wait_for(state="attached")
        ious.append(
            page.evaluate("[0, 1].map(n => document.getElementById(`stats-${n}`).dataset.iou)")
        )
        shown.append(before != page.evaluate("document.getElementById('canvas-0').toDataURL()"))
    page.select_option("#zoom", "fit")
    page.locator("body[data-zoom='fit']").wait_for(state="attached")
    sent = json.loads(page.evaluate("document.body.dataset.sent"))
    error = page.locator("#error").text_content()
    shot = page.screenshot()
    assert error == "" and shown == [True, True]  # each click changed what the page shows
    clicks = [(c["y"], c["x"], c["positive"]) for c in sent]  # the pixels the clicks landed on
    assert [p for *_, p in clicks] == [True, False]
    assert all(abs(a - b) <= 1 for c, t in zip(clicks, [(45, 60), (80, 20)], strict=True)
               for a, b in zip(c[:2], t, strict=True))  # fmt: skip
    drawn = page.evaluate("state.views.map(v => Array.from(v.mask.on))")  # the masks on screen
    image, gt = _scene(0)
    for n, entry in enumerate(models):
        predictor = Predictor(load(entry), 128)
        predictor.set_image(image)
        for k in (1, 2):
            logits, _ = replay(predictor, clicks[:k])
            shown = float(ious[k - 1][n])
            assert abs(shown - iou(logits[0].float().numpy() > 0, gt)) < 1e-6, (n, k)
        offline = logits[0].float().numpy() > 0
        assert np.array_equal(np.array(drawn[n], bool).reshape(gt.shape), offline), n
    (tmp_path / "app.png").write_bytes(shot)
    if os.environ.get("HRSAM_APP_SCREENSHOT"):  # the README's picture: this test's screenshot
        Path(os.environ["HRSAM_APP_SCREENSHOT"]).write_bytes(shot)


def _unit_edges(on: np.ndarray) -> set[tuple[int, int, str]]:
    """The slow reference: every unit edge between a pixel in the mask and one out of it (outside
    the image counts as out): (x, y, "h") from (x, y) to (x + 1, y), (x, y, "v") to (x, y + 1)."""
    padded = np.pad(on.astype(np.int8), 1)
    horizontal = np.argwhere(np.diff(padded[:, 1:-1], axis=0) != 0)  # (y, x): rows y - 1 and y
    vertical = np.argwhere(np.diff(padded[1:-1, :], axis=1) != 0)  # (y, x): columns x - 1 and x
    return {(int(x), int(y), "h") for y, x in horizontal} | {
        (int(x), int(y), "v") for y, x in vertical
    }


def test_the_pages_mask_outline_is_every_edge_of_the_mask_merged_into_runs(server, page):
    """The page's outline (`edges` in index.html, one pass over the rows, empty rows skipped)
    against the edges counted pixel by pixel, on random masks touching the image border."""
    page.goto(f"{server['base']}/")
    page.locator("body[data-ready='yes']").wait_for(state="attached")
    rng = np.random.default_rng(0)
    for h, w, density in ((1, 1, 1.0), (7, 5, 0.5), (37, 23, 0.3), (64, 80, 0.05), (50, 50, 0.0)):
        on = rng.random((h, w)) < density
        on[h // 3 : h // 2, :] = False  # empty rows inside the mask's extent
        runs = page.evaluate(
            """([flat, w, h]) => { const out = [];
                edges({ on: Uint8Array.from(flat), width: w, height: h },
                      (x0, y0, x1, y1) => out.push([x0, y0, x1, y1]));
                return out; }""",
            [on.astype(int).ravel().tolist(), w, h],
        )
        units = []
        for x0, y0, x1, y1 in runs:
            assert (x0 == x1) != (y0 == y1) and x0 <= x1 and y0 <= y1, (x0, y0, x1, y1)
            if y0 == y1:
                units += [(x, y0, "h") for x in range(x0, x1)]
            else:
                units += [(x0, y, "v") for y in range(y0, y1)]
        assert len(units) == len(set(units))  # no edge drawn twice
        assert set(units) == _unit_edges(on), (h, w, density)
        ends = {(x1, y1, "h" if y0 == y1 else "v") for x0, y0, x1, y1 in runs}
        starts = {(x0, y0, "h" if y0 == y1 else "v") for x0, y0, x1, y1 in runs}
        assert not ends & starts  # runs merged: none ends where another on its line starts
