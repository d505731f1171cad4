"""Shared fixtures: the fake OpenAI-compatible server (real HTTP on loopback) and clients for it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from glan.llm import AdmissionSettings, LLMClient
from glan.llm.openai_http import OpenAIBackend
from glan.store import ResponseCache
from glan.testing.fake_server import FakeServer

# Fast-failing admission for tests: small backoff, small breaker window.
FAST = {
    "backoff_base_s": 0.01,
    "backoff_max_s": 0.05,
    "default_retry_after_s": 0.05,
    "breaker_failures": 8,
    "breaker_window_s": 1.0,
}


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def make_client(fake_server: FakeServer, tmp_path: Path):
    """Build an LLMClient against the fake server; keyword overrides go to AdmissionSettings."""
    clients: list[LLMClient] = []

    def make(
        cache: bool | Path = True, timeout_s: float = 5.0, model: str = "fake-model", **admission
    ) -> LLMClient:
        backend = OpenAIBackend(model=model, base_url=fake_server.base_url, timeout_s=timeout_s)
        path = cache if isinstance(cache, Path) else tmp_path / "cache.sqlite"
        client = LLMClient(
            backend,
            cache=ResponseCache(path) if cache else None,
            admission=AdmissionSettings(**{"concurrency": 16, **FAST, **admission}),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """test-artifacts/ at the repository root (gitignored): screenshots to look at."""
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def chromium():
    """Debian's headless chromium driven by Playwright (scripts/test installs it in CI)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/test installs it on Debian)")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
