"""Headless Chromium driven over the Chrome DevTools Protocol (aiohttp's websocket client, in
the lock through mlflow): real mouse events on a page, JavaScript evaluated in it, screenshots.
Used by the app's benchmark (`benchmarks.app_latency`) and its browser test."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path


class Browser:
    """Headless Chromium driven over the Chrome DevTools Protocol (aiohttp's websocket)."""

    def __init__(self, profile: Path, width: int = 1500, height: int = 700) -> None:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--remote-debugging-port=0",
                 f"--window-size={width},{height}", f"--user-data-dir={profile}"]  # fmt: skip
        self.proc = subprocess.Popen(
            ["chromium", *flags, "about:blank"], stderr=subprocess.PIPE, text=True
        )
        for line in self.proc.stderr:
            if m := re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line):
                self.port = int(m[1])
                break
        self.n = 0

    async def connect(self, session):
        async with session.get(f"http://127.0.0.1:{self.port}/json/list") as r:
            [page] = [t for t in await r.json() if t["type"] == "page"]
        self.ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)

    async def send(self, method: str, **params):
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=120)
            if msg.get("id") == self.n:
                assert "error" not in msg, msg
                return msg.get("result", {})

    async def js(self, expression: str):
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                            awaitPromise=True)  # fmt: skip
        assert "exceptionDetails" not in r, (expression, r["exceptionDetails"])
        return r["result"].get("value")

    async def wait(self, expression: str, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while not await self.js(expression):
            if time.monotonic() > deadline:
                seen = await self.js(
                    "JSON.stringify({data: {...document.body.dataset},"
                    " error: (document.getElementById('error') || {}).textContent})"
                )
                raise AssertionError(f"timed out waiting for {expression}; the page: {seen}")
            await asyncio.sleep(0.1)

    async def click(self, canvas: str, x: int, y: int, button: str = "left"):
        """A real mouse press and release on pixel (x, y) of ``canvas``."""
        box = await self.js(
            f"(() => {{ const c = document.getElementById('{canvas}');"
            " const r = c.getBoundingClientRect();"
            " return [r.left, r.top, r.width / c.width, r.height / c.height]; })()"
        )
        px, py = box[0] + (x + 0.5) * box[2], box[1] + (y + 0.5) * box[3]
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=px, y=py, button=button,
                            clickCount=1)  # fmt: skip

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
