"""A real browser: headless Chromium receives relayed events through socket.io-client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from forwarder.sinks.settings import SocketIOSettings
from forwarder.sinks.socketio import SocketIOSink
from harness.processes import ROOT
from harness.relay_app import RelayServer
from harness.waits import wait_until
from tests.support.browser_events import browser_batch

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
SECRET = "browser-relay-secret-0123456789ab"
PAGE = ROOT / "tests/support/browser"
"""The test page, and beside it the socket.io-client bundle that `make browser-deps` installs."""
BUNDLE = PAGE / "node_modules/socket.io-client/dist/socket.io.min.js"


def js_view(value: Any) -> Any:
    """The value as JavaScript holds it: a JSON number has no separate integral float."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: js_view(item) for key, item in value.items()}
    if isinstance(value, list):
        return [js_view(item) for item in value]
    return value


def page_log(server: RelayServer) -> dict[str, Any]:
    """What the page reported: how often it connected, and `[event, payload]` in arrival order."""
    return dict(requests.get(f"{server.url}/browser/received", timeout=10).json())


@pytest.fixture
def server(tmp_path) -> Iterator[RelayServer]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser-deps` (Debian package chromium)")
    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} is missing: run `make browser-deps` (npm socket.io-client)")
    with RelayServer(SECRET, tmp_path / "server.log", browser_page=PAGE) as started:
        yield started


@pytest.fixture
def chromium(server, tmp_path) -> Iterator[subprocess.Popen[bytes]]:
    """Chromium on the test page, in its own process group so all its processes end with it."""
    with (tmp_path / "chromium.log").open("wb") as log:
        process = subprocess.Popen(
            [
                str(CHROMIUM),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp_path / 'profile'}",
                f"{server.url}/browser",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.browser
class TestBrowserReceivesRelayedEvents:
    def test_every_event_reaches_chromium_with_its_payload_in_order(
        self, server, chromium, tmp_path
    ):
        """Events delivered by the sink arrive in a real page with identical payloads, in order."""
        wait_until(lambda: page_log(server)["connects"] > 0, 60, what="the page to connect")
        batch = browser_batch()
        sink = SocketIOSink(SocketIOSettings(url=server.url, relay_secret=SECRET, ack_timeout_s=5))
        try:
            assert not sink.deliver(batch).failed
        finally:
            sink.close()
        expected = [[e.event, js_view(e.data)] for e in batch]
        wait_until(
            lambda: len(page_log(server)["received"]) >= len(expected), 60, what="the page's echoes"
        )
        assert chromium.poll() is None, (tmp_path / "chromium.log").read_text(errors="replace")
        assert json.dumps(page_log(server)["received"]) == json.dumps(expected)
