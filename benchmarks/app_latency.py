"""Per-click latency of the app as a user sees it: a real click in headless Chromium until the
mask is drawn, for one model at its ts (issue #31's goal: median under 100 ms for hrsam_tiny at
ts 512 on 2 cores).

    python -m benchmarks.app_latency --model hrsam_tiny=outputs/.../model.pt --ts 512

Clicks ``--clicks`` times on each of ``--images`` validation images (positive at the object's
pixels, negative elsewhere, alternating), reading from the page the round trip (click handler to
mask drawn), and from the server the encoder time (the first click of an image) and the decoder
time. Writes ``benchmarks/results/cpu/app_latency.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from hrsam import names

OUT = Path("benchmarks/results/cpu/app_latency.md")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.app_latency", description=__doc__)
    p.add_argument("--model", default="hrsam_tiny", help="PRESET[=CHECKPOINT]")
    p.add_argument("--ts", type=int, default=512)
    p.add_argument("--images", type=int, default=6, help="validation images clicked on")
    p.add_argument("--clicks", type=int, default=6, help="clicks per image")
    p.add_argument("--data-root", default="data/synthetic")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def start_server(args, upload_dir: Path):
    """The app on a free port in this process (a uvicorn thread): (base URL, engine, server)."""
    import socket

    import uvicorn

    from hrsam.app.__main__ import build

    app_args = argparse.Namespace(
        sweeps="/nonexistent", model=[args.model], ts=args.ts, data_root=args.data_root,
        data_name="synthetic", images=args.images,
    )  # fmt: skip
    engine, app = build(app_args, upload_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", engine, server


def click_points(gt: np.ndarray, n: int, seed: int) -> list[tuple[int, int, str]]:
    """``n`` clicks (x, y, button): on the object (left) and off it (right), alternating."""
    rng = np.random.default_rng(seed)
    inside, outside = np.argwhere(gt), np.argwhere(~gt)
    out = []
    for k in range(n):
        pool, button = (inside, "left") if k % 2 == 0 or not len(outside) else (outside, "right")
        y, x = pool[rng.integers(len(pool))]
        out.append((int(x), int(y), button))
    return out


def click_pixel(page, canvas: str, x: int, y: int, button: str = "left") -> None:
    """A real mouse click on image pixel (x, y) of the page's ``canvas`` at whatever zoom it is
    shown: the point on screen from the element's box and its displayed scale (box width over
    the image's width in pixels, ``data-width``)."""
    element = page.locator(f"#{canvas}")
    box = element.bounding_box()
    width, height = element.evaluate("c => [Number(c.dataset.width), Number(c.dataset.height)]")
    sx, sy = box["width"] / width, box["height"] / height
    # Playwright scrolls that point into view (a zoomed image scrolls in its frame) and checks
    # that the canvas, not something over it, receives the click
    element.click(position={"x": (x + 0.5) * sx, "y": (y + 0.5) * sy}, button=button)


def chromium() -> str:
    """The system Chromium (Debian's package): Playwright drives it, nothing is downloaded."""
    found = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if found is None:
        raise SystemExit("app_latency: needs Chromium on PATH (Debian: apt-get install chromium)")
    return found


def measure(base: str, engine, args) -> list[dict]:
    """One row per click: image, click index, round trip, encoder and decoder ms."""
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(f"{base}/")
            page.locator("body[data-ready='yes']").wait_for(state="attached")
            for i, image in enumerate(engine.images.values()):
                page.select_option("#image", image.id)
                page.locator(f"body[data-image='{image.id}']").wait_for(state="attached")
                for k, (x, y, button) in enumerate(click_points(image.gt, args.clicks, i), 1):
                    click_pixel(page, "canvas-0", x, y, button)
                    # checked every 100 ms, not every frame: the page's own clock times the
                    # click, and a harness polling each frame takes CPU from the server it times
                    page.wait_for_function(
                        f"document.body.dataset.clicks === '{k}'"
                        " && document.body.dataset.state === 'idle'",
                        polling=100,
                    )
                    last = json.loads(page.evaluate("document.body.dataset.last"))
                    rows.append({"image": image.name, "click": k, **last})
        finally:
            browser.close()
    return rows


def summary(rows: list[dict]) -> list[tuple[str, float, float, int]]:
    """(what, median ms, p95 ms, n) for the round trips of first and later clicks, and the
    server's encoder and decoder times."""

    def stat(name, values):
        v = np.asarray(values, np.float64)
        return (name, float(np.median(v)), float(np.percentile(v, 95)), len(v))

    first = [r for r in rows if r["click"] == 1]
    later = [r for r in rows if r["click"] > 1]
    return [
        stat("round trip, later clicks (decoder only)", [r["round_trip"] for r in later]),
        stat("round trip, first click of an image (+ encoder)", [r["round_trip"] for r in first]),
        stat("server encoder, once per image", [r[names.ENCODER_MS] for r in first]),
        stat("server decoder, per click", [r[names.DECODER_MS] for r in rows]),
    ]  # fmt: skip


def write(args, rows, stats, seconds: float) -> str:
    import torch

    lines = [
        "# App latency: a click in the browser to the mask drawn",
        "",
        "`python -m benchmarks.app_latency "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
        + "`",
        "",
        f"- model: `{args.model}`, ts {args.ts}, fp32, CPU "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads), torch {torch.__version__}",
        f"- {args.images} synthetic validation images x {args.clicks} clicks, real mouse events in "
        "headless Chromium driven by Playwright; the page's own clock from the click handler "
        "to the mask drawn (request, decoder, the mask's run lengths, filling and outlining "
        "it, compositing)",
        f"- {len(rows)} clicks in {seconds:.0f} s; target: median round trip of a click under "
        "100 ms",
        "",
        "| what | median ms | p95 ms | n |",
        "|---|---|---|---|",
        *(f"| {w} | {m:.1f} | {p:.1f} | {n} |" for w, m, p, n in stats),
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base, engine, server = start_server(args, Path(tmp))
        try:
            rows = measure(base, engine, args)
        finally:
            server.should_exit = True
    print(write(args, rows, summary(rows), time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
