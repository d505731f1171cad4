"""Rate limits are the endpoint answering "later": waited out, never counted as failures.

And the other side of admission: a body the endpoint keeps refusing with the same hard error is
given up after a few quick tries, so the run replaces it instead of spending minutes in backoff
on it (the rule: glan.llm.bodyfaults; its other tests: tests/test_body_faults.py).
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from glan.llm import ChatRequest, EndpointDown, RequestFailed, user


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=user(text), max_tokens=64)


async def test_a_burst_starting_inside_a_rate_limit_window_completes(make_client, fake_server):
    fake_server.rate_limit_for(1.0, retry_after=1.0)
    client = make_client(concurrency=64, breaker_window_s=30.0)
    replies = await asyncio.gather(*(client.chat(ask(f"q{i}")) for i in range(64)))
    assert len(replies) == 64 and all(r.text for r in replies)
    assert fake_server.by_status["200"] == 64  # each answered once, none given up
    # The first 429s paused admission: the rest waited instead of hammering the endpoint.
    assert 1 <= fake_server.by_status["429_window"] == client.stats.rate_limited < 64
    assert client.stats.cuts >= 1 and client.stats.retries == 0
    assert client.admission.breaker.consecutive_failures == 0  # rate limits are no failure streak


async def test_an_endpoint_that_only_rate_limits_stops_after_the_breaker_window(
    make_client, fake_server
):
    fake_server.rate_limit_for(math.inf, retry_after=0.1)
    # Without the Retry-After, admission would pause only 1 ms and ask again.
    client = make_client(concurrency=8, breaker_window_s=1.5, default_retry_after_s=0.001)
    started = time.monotonic()
    with pytest.raises(EndpointDown, match=r"answered only rate limits for \d+ s"):
        await asyncio.gather(*(client.chat(ask(f"q{i}")) for i in range(8)))
    # Not in a second (the old breaker counted 429s as failures and stopped after 8): a lower
    # bound, which a slow machine only makes easier to meet.
    assert time.monotonic() - started >= 1.5
    # It kept asking, paced by Retry-After: each pause lets at most the 8 slots ask once, so
    # about 15 pauses in the window; asking without pausing would send thousands.
    limited = fake_server.by_status["429_window"]
    assert 8 < limited <= 8 * (1.5 / 0.1 + 2), limited


async def test_a_503_with_retry_after_is_a_rate_limit(make_client, fake_server):
    fake_server.rate_limit_for(0.5, retry_after=0.3, status=503)
    # Without the Retry-After, admission would pause only 10 ms and ask again.
    client = make_client(concurrency=8, breaker_window_s=30.0, default_retry_after_s=0.01)
    started = time.monotonic()
    replies = await asyncio.gather(*(client.chat(ask(f"q{i}")) for i in range(8)))
    assert len(replies) == 8
    assert 1 <= fake_server.by_status["503_window"] == client.stats.rate_limited
    assert client.stats.retries == 0  # not a transient failure: no backoff retry
    assert client.admission.breaker.consecutive_failures == 0
    assert time.monotonic() - started >= 0.3  # paused for the Retry-After (a lower bound)
    # At most two pauses of 0.3 s fit in the 0.5 s window, each after one round of the 8 slots.
    assert fake_server.by_status["503_window"] <= 2 * 8


async def test_a_rate_limited_request_waits_while_the_endpoint_answers_others(
    make_client, fake_server
):
    """Steady partial throttling: one body is refused for three breaker windows while other
    requests are served. It has no patience of its own to run out of: it waits and is
    answered (a request that gave up would be replaced, and the records would depend on how
    the throttling fell)."""
    fake_server.throttle_when = lambda body: "throttled" in body["messages"][-1]["content"]
    fake_server.throttle_s = 3.0
    fake_server.throttle_retry_after_s = 0.05
    client = make_client(concurrency=4, breaker_window_s=1.0)
    served = 0

    async def others() -> None:
        nonlocal served
        while True:
            await client.chat(ask(f"other {served}"))
            served += 1

    background = asyncio.ensure_future(others())
    try:
        reply = await client.chat(ask("throttled for three windows"))
    finally:
        background.cancel()
    assert reply.text
    assert fake_server.by_status["429_throttled"] >= 3  # it was refused, again and again
    assert served >= 3  # while the endpoint answered others
    assert client.stats.failures == 0


async def test_a_body_that_always_fails_the_same_way_is_given_up_after_k_quick_tries(
    make_client, fake_server
):
    """5% of bodies always get the same HTTP 500 as a random one (a request that breaks the
    server). Each is given up for its own sake once K tries in a row met it while other
    requests were served: K tries, one more when its second met it with nothing served in
    between, and one or two backoff waits, not six (the time: bench/failure_costs.py)."""
    fake_server.poisoned_rate = 0.05
    fake_server.latency_s = 0.05
    n, concurrency, k = 200, 16, 8
    client = make_client(
        concurrency=concurrency,
        backoff_base_s=0.5,
        backoff_max_s=30.0,
        breaker_failures=50,
        body_fault_repeats=k,
    )

    async def outcome(i: int) -> bool:
        try:
            await client.chat(ask(f"question {i}"))
        except RequestFailed as exc:
            assert exc.permanent and f"the same error {k} times in a row" in str(exc)
            return False
        return True

    results = await asyncio.gather(*(outcome(i) for i in range(n)))
    failed = results.count(False)
    assert 3 <= failed <= 25  # about 5% of 200 bodies are poisoned
    assert k * failed <= fake_server.by_status["poisoned"] <= (k + 1) * failed
    assert client.stats.retries <= 2 * failed  # the tries past the second are no retries


async def test_one_body_throttled_for_ever_does_not_cut_or_pause_everyone(make_client, fake_server):
    """One body answered 429 at every try (others served): its first 429 may cut once; its
    repeats wait alone, so the limit stays where the endpoint's health puts it."""
    fake_server.throttle_when = lambda body: "STUCK" in body["messages"][-1]["content"]
    fake_server.throttle_s = math.inf
    fake_server.throttle_retry_after_s = 0.02
    fake_server.latency_s = 0.02
    client = make_client(concurrency=16, breaker_window_s=30.0, cache=False)
    stuck = asyncio.ensure_future(client.chat(ask("STUCK")))
    served = 0
    # Others are served, 16 at a time, until the stuck body has been refused three times (a
    # count, not a number of requests that a loaded machine might finish before its retries).
    while fake_server.by_status["429_throttled"] < 3:
        assert served < 20_000, "the stuck body stopped asking"
        await asyncio.gather(*(client.chat(ask(f"q{served + k}")) for k in range(16)))
        served += 16
    assert client.stats.cuts <= 1
    assert fake_server.by_status["200"] == served  # every other request was answered
    stuck.cancel()


async def test_a_request_larger_than_the_token_limit_fails_alone(make_client, fake_server):
    """OpenAI answers 429 "Request too large ... tokens per min" for a body over the limit:
    waiting never lets it through, so it fails at once as a bad request, pausing nobody."""
    from aiohttp import web

    async def too_large(request):
        return web.json_response(
            {"error": {"message": "Request too large for gpt-4o on tokens per min (TPM)"}},
            status=429,
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", too_large)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    from glan.llm import LLMClient
    from glan.llm.openai_http import OpenAIBackend

    client = LLMClient(OpenAIBackend(model="m", base_url=f"http://127.0.0.1:{port}/v1"))
    client._preflighted = True
    try:
        with pytest.raises(RequestFailed, match="Request too large") as failed:
            await client.chat(ask("a very long prompt"))
        assert failed.value.permanent and client.stats.rate_limited == 0
    finally:
        await client.aclose()
        await runner.cleanup()


async def test_a_body_under_test_waits_out_a_rate_limit_on_its_probes(make_client, fake_server):
    """The quota runs out while a body that breaks the server is tested alone, its tries
    following the client's probes: the probes are rate limited too. A rate limit is no
    answer and never a retry, for a probe as for any request: the probes wait it out, the
    body is given up after K tries as it would be unthrottled, not deferred for having
    spent its retries on rate-limited probes."""
    tried = 0

    def poison_then_the_quota_runs_out(body) -> str | None:
        nonlocal tried
        if body["messages"][-1]["content"] != "poison":
            return None
        tried += 1
        if tried == 3:
            fake_server.rate_limit_for(0.5, retry_after=0.05)  # every request, from now on
        return "500"

    fake_server.fault_when = poison_then_the_quota_runs_out
    client = make_client(max_retries=2, breaker_window_s=30.0, body_fault_repeats=6)
    await client.chat(ask("an ordinary body"))
    with pytest.raises(RequestFailed, match="the same error 6 times in a row") as given_up:
        await client.chat(ask("poison"))
    assert given_up.value.permanent
    assert fake_server.by_status["429_window"] > 0


async def test_a_retry_after_longer_than_the_breaker_window_stops_at_once(make_client, fake_server):
    """A spent hourly quota (Retry-After: 3600) with a 1 s breaker window: the run stops with
    one line now instead of sleeping an hour without looking at the breaker."""
    fake_server.rate_limit_for(math.inf, retry_after=3600)
    client = make_client(concurrency=4, breaker_window_s=1.0)
    with pytest.raises(EndpointDown, match="asks to wait 3600 s"):
        await asyncio.wait_for(
            asyncio.gather(*(client.chat(ask(f"q{i}")) for i in range(4))), timeout=60
        )
