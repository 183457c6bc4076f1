"""The dashboard in a real headless Chromium, driven over the DevTools protocol: it loads
with no console errors, shows the tip height, and follows a newly mined block."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from chain.chainstate import ChainState
from chain.storage import open_chain
from tests.p2putil import clone_datadir, free_port, premine, write_genesis
from tests.pngutil import decode_png
from wallet.rpc import RpcClient

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)  # fmt: skip
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium here (apt-get install chromium; .ci/run does)"
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-allow-origins=*"]  # fmt: skip


class Cdp:
    """A minimal DevTools protocol client on one page target."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.errors: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Runtime.exceptionThrown":
                self.errors.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                self.errors.append("console: " + json.dumps(params["args"])[:500])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                self.errors.append("log: " + params["entry"].get("text", ""))

    async def call(self, method: str, **params: Any) -> Any:
        i = next(self.ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        await self.ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 20)
        assert "error" not in reply, reply
        return reply["result"]

    async def eval(self, expr: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r["result"].get("value")

    async def wait_eval(self, expr: str, want: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = await self.eval(expr)
            if got == want:
                return
            await asyncio.sleep(0.1)
        status = await self.eval("document.getElementById('status').textContent")
        raise AssertionError(f"{expr} is {got!r}, not {want!r} (status {status!r}, {self.errors})")


def devtools_port(profile: Path, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    f = profile / "DevToolsActivePort"
    while not (f.exists() and f.read_text().strip()):
        assert proc.poll() is None, "chromium exited"
        assert time.monotonic() < deadline, "chromium gave no DevTools port"
        time.sleep(0.05)
    return int(f.read_text().split()[0])


def test_dashboard_in_headless_chromium(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    net = write_genesis(genesis, 10)
    premine(tmp_path / "a", net, 3)
    clone_datadir(tmp_path / "a", tmp_path / "b")
    premine(tmp_path / "b", net, 1)  # block 4, submitted later as "mined"
    db = open_chain(tmp_path / "b" / "devnet", network="devnet")
    try:
        chain = ChainState(db, net)
        block4 = chain.get_block(chain.tip.hash).to_bytes().hex()
    finally:
        db.close()
    rpc_port = free_port()
    node = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "node", "--network", "devnet", "--datadir",
         str(tmp_path / "a"), "--genesis-file", str(genesis), "--nop2p",
         "--rpc-port", str(rpc_port), "--noblobs", "--dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    profile = tmp_path / "chromium"
    browser: subprocess.Popen[bytes] | None = None
    try:
        url_file = tmp_path / "a" / "devnet" / "dashboard.url"
        deadline = time.monotonic() + 60
        while not url_file.exists():
            assert node.poll() is None, "node exited"
            assert time.monotonic() < deadline, "no dashboard.url"
            time.sleep(0.05)
        url = url_file.read_text().strip()
        assert url.startswith(f"http://127.0.0.1:{rpc_port}/dashboard/#token=")
        browser = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port = devtools_port(profile, browser)
        client = RpcClient.from_datadir(tmp_path / "a", "devnet", port=rpc_port)
        asyncio.run(drive(port, url, client, block4))
    finally:
        if browser is not None:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
        node.terminate()
        node.wait(30)


async def drive(port: int, url: str, client: RpcClient, block4: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json(content_type=None)
        page = next(t for t in targets if t["type"] == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = Cdp(ws)
            for domain in ("Runtime", "Log", "Page"):
                await cdp.call(f"{domain}.enable")
            await cdp.call("Page.navigate", url=url)
            tip = "document.getElementById('tip-height').textContent"
            await cdp.wait_eval(tip, "3")
            rows = "document.querySelectorAll('#blocks tr').length"
            await cdp.wait_eval(rows, 4)
            await cdp.wait_eval("document.querySelectorAll('#chart polyline').length", 1)
            await check_chart(cdp)
            await cdp.wait_eval("document.getElementById('status').textContent", "live")
            board = "document.querySelectorAll('#leaderboard tr').length"
            await cdp.wait_eval(board, 1)
            # The token left the address bar; no other page can read it from history.
            assert "token" not in await cdp.eval("location.href")
            # A block is mined (submitted over RPC): the page follows.
            result = await asyncio.to_thread(client.call, "submitblock", block4)
            assert result is None
            await cdp.wait_eval(tip, "4")
            await cdp.wait_eval(rows, 5)
            assert cdp.errors == [], cdp.errors
            cdp.reader.cancel()


CHART_GEOMETRY = """(() => {
  const svg = document.querySelector('#chart svg').getBoundingClientRect();
  const texts = [...document.querySelectorAll('#chart text')].map((t) => {
    const r = t.getBoundingClientRect();
    return {text: t.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom};
  });
  const axis = getComputedStyle(document.querySelector('#chart path.axis')).fill;
  return {svg: {left: svg.left, right: svg.right, top: svg.top, bottom: svg.bottom,
                width: svg.width, height: svg.height}, texts, axis};
})()"""
ACCENT = np.array([0x2F, 0x6F, 0xDF])  # --acc in style.css: the chart's line


async def check_chart(cdp: Cdp) -> None:
    """The work chart, on a screenshot: no black fill over the plot, a visible line, and
    every label inside the chart (none clipped)."""
    geo = await cdp.eval(CHART_GEOMETRY)
    box = geo["svg"]
    assert box["width"] > 300 and box["height"] > 100, box
    shot = await cdp.call(
        "Page.captureScreenshot", format="png", captureBeyondViewport=True,
        clip={"x": box["left"], "y": box["top"], "width": box["width"],
              "height": box["height"], "scale": 1},
    )  # fmt: skip
    png = base64.b64decode(shot["data"])
    if os.environ.get("POUW_SCREENSHOT_DIR"):  # to look at it: where to leave chart.png
        Path(os.environ["POUW_SCREENSHOT_DIR"], "chart.png").write_bytes(png)
    pixels = decode_png(png)[:, :, :3].astype(np.int32)
    dark = (pixels.sum(axis=2) < 3 * 60).mean()
    assert dark < 0.02, f"{dark:.1%} of the chart is near black"
    line = (np.abs(pixels - ACCENT).sum(axis=2) < 100).mean()
    assert line > 0.001, f"the line covers {line:.2%} of the chart"
    assert geo["axis"] == "none", geo["axis"]
    for t in geo["texts"]:
        inside = (t["left"] >= box["left"] - 0.5 and t["right"] <= box["right"] + 0.5
                  and t["top"] >= box["top"] - 0.5 and t["bottom"] <= box["bottom"] + 0.5)
        assert inside, (t, box)  # fmt: skip
