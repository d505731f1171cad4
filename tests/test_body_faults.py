"""Bodies that break the server, told from an endpoint's trouble (glan.llm.bodyfaults,
glan.llm.outage, glan.llm.witness): given up for their own sake after K identical hard errors
in a row, each after another request was served; never for an endpoint's outage."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import unicodedata
from collections import Counter

import orjson
import pytest

from glan.llm import ChatRequest, EndpointDown, RequestFailed, user
from glan.llm.admission import AdmissionSettings, LocalAdmission
from glan.llm.backend import Backend, Completion
from glan.llm.bodyfaults import BodyFaults
from glan.llm.client import LLMClient
from glan.llm.openai_http import OpenAIBackend
from glan.llm.outage import CHECK_TRIES
from glan.llm.signatures import error_signature
from glan.llm.usage import UsageLedger
from glan.llm.witness import PROBE_BODIES, PROBE_TOKENS, Witness, shape_check
from glan.store import ResponseCache
from glan.testing.fake_server import FakeServer


def ask(text: str = "hello", **kw) -> ChatRequest:
    return ChatRequest(messages=user(text), max_tokens=64, **kw)


def is_probe(body) -> bool:
    return "(probe " in body["messages"][-1]["content"]


async def test_retries_are_bounded(make_client, fake_server):
    fake_server.enqueue(*["500"] * 5)
    fake_server.record_bodies = True
    client = make_client(max_retries=2, breaker_failures=100)
    with pytest.raises(RequestFailed, match="gave up after 2 retries"):
        await client.chat(ask())
    # The same error twice with nothing served in between: a round of probes tells whether
    # the endpoint works before the body is tried a third time (three bodies, in case one is
    # a body that breaks the server); none was served, which spent the last retry.
    assert tries(fake_server) == {"hello": 2, "probe": PROBE_BODIES}


def tries(server: FakeServer) -> Counter[str]:
    """How often the server was asked each body (by its last message; probes as "probe")."""
    texts = (body["messages"][-1]["content"] for body in server.seen_bodies)
    return Counter("probe" if "(probe " in text else text for text in texts)


def poison_fails(body) -> str | None:
    """The endpoint's fault for a body that breaks the server: a 500 like any random one."""
    return "500" if body["messages"][-1]["content"].startswith("poison") else None


async def test_bodies_that_break_the_server_alone_in_flight_are_given_up(make_client, fake_server):
    """The last requests of a run may all be bodies that break the server, so nothing else is
    served between their tries: the client probes the endpoint (a few tokens, a new body each
    time) to show it works. Each body is given up for its own sake after K tries in a row
    (one more when its second met nothing served in between), none is deferred (which would
    leave the run short), and none feeds the breaker past its first two failures."""
    fake_server.fault_when = poison_fails
    fake_server.record_bodies = True
    client = make_client(body_fault_repeats=6, breaker_failures=1000)
    await client.chat(ask("an ordinary body"))
    results = await asyncio.gather(
        *(client.chat(ask(f"poison {i}")) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RequestFailed) and r.permanent for r in results), results
    sent = tries(fake_server)
    assert all(sent[f"poison {i}"] in (6, 7) for i in range(3)), sent
    assert sent["probe"] >= 1 and client.usage.rows[("probe", "fake-model")].requests >= 1
    assert client.admission.breaker.consecutive_failures == 0


async def test_a_probe_body_that_breaks_the_server_is_followed_by_another(make_client, fake_server):
    """A probe body may itself be one that breaks the server: another is sent at once, and
    the body under test spends no retry on it."""

    def poison_and_the_first_probe(body) -> str | None:
        text = body["messages"][-1]["content"]
        return "500" if text.startswith("poison") or text.endswith("(probe 1)") else None

    fake_server.fault_when = poison_and_the_first_probe
    client = make_client(body_fault_repeats=4)
    await client.chat(ask("an ordinary body"))
    with pytest.raises(RequestFailed, match="the same error 4 times in a row"):
        await client.chat(ask("poison"))
    # Two retries: after the first failure, and the second try (nothing served in between).
    assert client.stats.retries == 2


async def test_a_body_unlucky_many_times_in_a_row_is_still_served(make_client, fake_server):
    """A flaky endpoint's random 500 reads like a body's own: a body that met it K-1 times in
    a row, each while other requests were served, is not given up; it is served."""
    k = 6
    left = {"unlucky": k - 1}

    def unlucky(body) -> str | None:
        if body["messages"][-1]["content"] == "unlucky" and left["unlucky"]:
            left["unlucky"] -= 1
            return "500"
        return None

    fake_server.fault_when = unlucky
    fake_server.record_bodies = True
    client = make_client(body_fault_repeats=k)
    await client.chat(ask("an ordinary body"))
    assert "unlucky" in (await client.chat(ask("unlucky"))).text
    assert tries(fake_server)["unlucky"] == k


async def test_a_suspects_count_goes_on_in_the_next_run(make_client, fake_server, tmp_path):
    """A run stopped while it tested a body that breaks the server leaves the body's count in
    the response cache: the next run gives it up after the tries the first one had left."""
    k = 8
    fake_server.fault_when = poison_fails
    fake_server.record_bodies = True
    path = tmp_path / "run.sqlite"
    first = make_client(cache=path, body_fault_repeats=k)
    await first.chat(ask("an ordinary body"))
    testing = asyncio.ensure_future(first.chat(ask("poison")))
    while tries(fake_server)["poison"] < 4 and not testing.done():
        await asyncio.sleep(0.001)
    assert not testing.done()  # still being tested, not given up or deferred
    testing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await testing
    cache = ResponseCache(path)
    [(_, counted)] = cache.failing_bodies(first.backend.endpoint_id).values()
    cache.close()
    assert 2 <= counted < k
    fake_server.seen_bodies.clear()
    second = make_client(cache=path, body_fault_repeats=k)
    await second.chat(ask("another ordinary body"))  # served after the first run's failures
    with pytest.raises(RequestFailed, match=f"the same error {k} times in a row") as given_up:
        await second.chat(ask("poison"))
    assert given_up.value.permanent
    assert tries(fake_server)["poison"] == k - counted


def serves_only_probes(body) -> str | None:
    """Out of memory on any real prompt, or a structured-output engine that broke (every
    stage request carries a schema, a probe does not)."""
    return None if is_probe(body) else "500"


def is_check(body) -> bool:
    """A request of a body's shape without its text (glan.llm.witness.shape_check)."""
    return "(check " in body["messages"][-1]["content"]


ENDPOINT_FAILS_THE_SHAPE = "whatever their text, while other requests are served"


@pytest.mark.parametrize(("concurrency", "bodies"), [(1, 1), (1, 12), (16, 12)])
async def test_an_endpoint_that_serves_only_the_probes_stops_the_run(
    make_client, fake_server, concurrency, bodies
):
    """The endpoint fails every request of the run's own with one error and serves only the
    client's probes. That is no set of bodies that break the server, however few are in
    flight: before a body is given up, a request of its shape without its text is sent, and
    fails alike. The run stops with one line naming the error, nothing is given up for its
    own sake, and no count is kept for a later run."""
    client = make_client(concurrency=concurrency, breaker_failures=10_000, body_fault_repeats=6)
    await client.chat(ask("served before the incident"))
    fake_server.fault_when = serves_only_probes
    results = await asyncio.gather(
        *(client.chat(ask(f"a long prompt {i}")) for i in range(bodies)), return_exceptions=True
    )
    assert all(isinstance(r, EndpointDown) for r in results), results
    assert ENDPOINT_FAILS_THE_SHAPE in str(results[0])
    assert "HTTP 500" in str(results[0])
    assert client.cache.failing_bodies(client.backend.endpoint_id) == {}


async def test_a_stage_whose_schema_the_engine_cannot_serve_stops_the_run(make_client, fake_server):
    """The structured-output engine breaks on one stage's schema (a keyword of it, say) while
    a body of that stage is alone in flight; another stage's requests, with their own schema
    and larger prompts, go on being served, as do the probes. Those tell nothing of the
    body's schema, and the check of the body's own shape fails alike, which shows the
    endpoint fails every request with that schema: the run stops and the body is not given
    up."""

    def schema(key: str) -> dict:
        return {"type": "object", "properties": {key: {"type": "string"}}, "required": [key]}

    def syllabus(text: str) -> ChatRequest:
        return ask(text, json_schema=schema("name"), schema_name="syllabus", tag="syllabus")

    def engine_fails_the_syllabus_schema(body) -> str | None:
        fmt = body.get("response_format") or {}
        return "500" if fmt.get("json_schema", {}).get("name") == "syllabus" else None

    client = make_client(body_fault_repeats=4, breaker_failures=10_000)
    await client.chat(syllabus("short"))
    fake_server.fault_when = engine_fails_the_syllabus_schema
    body = asyncio.ensure_future(client.chat(syllabus("a prompt longer than any served before")))
    answered = 0
    with contextlib.suppress(EndpointDown):  # once the run stops, so do the answers
        while not body.done():
            prompt = f"an answer's prompt, longer than any syllabus's {answered} " * 3
            await client.chat(ask(prompt, json_schema=schema("text"), tag="answers"))
            answered += 1
    with pytest.raises(EndpointDown, match=ENDPOINT_FAILS_THE_SHAPE):
        await body
    assert answered > 1


async def test_a_random_error_on_the_check_does_not_stop_the_run(make_client, fake_server):
    """A body that breaks the server, alone among the last requests, is checked against its
    own shape before it is given up. A flaky endpoint's random 500 reads like the body's
    error: here the first round of checks all meet it. That is not taken for the endpoint's
    failure: the check is held and sent again once a probe was served, then served, and the
    body is given up for its own sake."""
    checks = Counter()

    def poison_and_random_500s_on_the_first_checks(body) -> str | None:
        if is_check(body):
            checks["sent"] += 1
            return "500" if checks["sent"] <= CHECK_TRIES else None
        return "500" if body["messages"][-1]["content"] == "poison" else None

    fake_server.fault_when = poison_and_random_500s_on_the_first_checks
    client = make_client(body_fault_repeats=4)
    await client.chat(ask("an ordinary body"))
    with pytest.raises(RequestFailed, match="the same error 4 times in a row") as given_up:
        await client.chat(ask("poison"))
    assert given_up.value.permanent
    assert checks["sent"] > CHECK_TRIES  # the first round failed alike, the next was served


@pytest.mark.parametrize("concurrency", [1, 16])
async def test_an_endpoint_that_serves_only_the_probes_from_the_start_stops_the_run(
    make_client, fake_server, concurrency
):
    """Nothing of the run's own was ever served: each body's check of its own shape fails
    alike all the same, and the run stops."""
    client = make_client(concurrency=concurrency, breaker_failures=10_000, body_fault_repeats=6)
    fake_server.fault_when = serves_only_probes
    results = await asyncio.gather(
        *(client.chat(ask(f"a long prompt {i}")) for i in range(12)), return_exceptions=True
    )
    assert all(isinstance(r, EndpointDown) for r in results), results
    assert ENDPOINT_FAILS_THE_SHAPE in str(results[0])


TOO_LARGE = "the endpoint fails requests this large now"


@pytest.mark.parametrize("concurrency", [1, 16])
async def test_an_endpoint_out_of_memory_on_long_prompts_defers_them(
    make_client, fake_server, concurrency
):
    """Every long prompt fails with one error while the short requests of the run go on
    being served: served requests smaller than a body tell nothing of it, and its own
    shape's check fails alike, but the same shape smaller is served. The failure is the
    size's: each long body is deferred (neither given up, which would change the records
    for a limit that may pass, nor stopping the run, which would leave everything else
    undone), and no count of them is kept. Once the endpoint serves them, they are served."""
    fake_server.fault_when = lambda body: (
        "500" if sum(len(m["content"]) for m in body["messages"]) > 300 else None
    )
    client = make_client(concurrency=concurrency, breaker_failures=10_000, body_fault_repeats=6)
    long_ones = [ask(f"a long prompt {i} " * 20) for i in range(40)]
    deferred = asyncio.gather(*map(client.chat, long_ones), return_exceptions=True)
    served = 0
    while not deferred.done():
        await client.chat(ask(f"a short one {served}"))
        served += 1
    results = await deferred
    assert all(
        isinstance(r, RequestFailed) and not r.permanent and TOO_LARGE in str(r) for r in results
    ), Counter(map(repr, results))
    assert served > 1
    assert list(client.outages.deferred_too_large().values()) == [40]
    assert client.cache.failing_bodies(client.backend.endpoint_id) == {}
    fake_server.fault_when = None
    await asyncio.gather(*map(client.chat, long_ones))
    assert client.outages.deferred_too_large() == {}


async def test_a_long_body_whose_shape_the_endpoint_serves_at_no_size_stops_the_run(
    make_client, fake_server
):
    """The endpoint fails every request of the run's own, long or short, and serves only
    the probes: a long body's shape fails alike as large and smaller. That is no size limit:
    the run stops, nothing is deferred."""
    client = make_client(breaker_failures=10_000, body_fault_repeats=6)
    fake_server.fault_when = serves_only_probes
    with pytest.raises(EndpointDown, match=ENDPOINT_FAILS_THE_SHAPE):
        await client.chat(ask("a long prompt " * 40))
    assert client.outages.deferred_too_large() == {}


def dense_tokens(text: str) -> int:
    """Tokens as a tokenizer counts them, roughly: a word is one, every other sign one."""
    return len(re.findall(r"[^\W\d_]+|\d|[^\w\s]", text))


MATH = r"Show $\int_0^1 x^2\,dx=\frac{1}{3}$ and $\sum_{k=1}^{n} k^3=(\frac{n(n+1)}{2})^2$. "


async def test_a_dense_body_over_a_token_limit_is_not_given_up(make_client, fake_server):
    """The endpoint's limit is in tokens, and a math body has many more per character than
    prose: a check of prose as long as the body would be under the limit and served, and the
    body given up for its own sake. The check keeps the body's own kinds of character, so
    its tokens are the body's: it fails alike, and the body is deferred as too large."""
    fake_server.fault_when = lambda body: (
        "500" if sum(dense_tokens(m["content"]) for m in body["messages"]) > 400 else None
    )
    client = make_client(breaker_failures=10_000, body_fault_repeats=4)
    await client.chat(ask("an ordinary body"))
    with pytest.raises(RequestFailed, match=TOO_LARGE) as deferred:
        await client.chat(ask(MATH * 12))
    assert not deferred.value.permanent


async def test_a_chat_template_that_breaks_on_a_system_turn_gives_no_body_up(
    make_client, fake_server
):
    """The endpoint's chat template fails every request with a system turn, at any size,
    and serves the rest: a body with one fails, and so does the check of its shape, which
    keeps its turns. The run stops; the body is not given up for its own sake."""
    fake_server.fault_when = lambda body: "500" if body["messages"][0]["role"] == "system" else None
    client = make_client(breaker_failures=10_000, body_fault_repeats=4)
    await client.chat(ask("an ordinary body"))
    with pytest.raises(EndpointDown, match=ENDPOINT_FAILS_THE_SHAPE):
        await client.chat(ChatRequest(messages=user("a body", system="be kind"), max_tokens=64))


def test_a_check_keeps_the_bodys_turns_size_and_kinds_of_character_but_not_its_words():
    body = ChatRequest(
        messages=user(
            "Compute $\\frac{12}{7}$ - 光合作用 Ωμέγα, twice.", system="You are a tutor."
        ),
        max_tokens=64,
    )
    check = shape_check(body, 3)
    assert [m.role for m in check.messages] == ["system", "user"]
    assert "(check 3)" in check.messages[-1].content
    for mine, theirs in zip(body.messages, check.messages, strict=True):
        assert len(mine.content) == len(theirs.content)
    system, asked = body.messages[0].content, check.messages[0].content
    assert [unicodedata.category(c) for c in system] == [unicodedata.category(c) for c in asked]
    text = check.messages[-1].content[len("Reply briefly. (check 3) ") :]
    original = body.messages[-1].content[len("Reply briefly. (check 3) ") :]
    assert [unicodedata.category(c) for c in text] == [unicodedata.category(c) for c in original]
    assert not set(re.findall(r"\w+", text)) & set(re.findall(r"\w+", original))
    assert len(shape_check(body, 3, at_most=20).messages[0].content) == 10


async def test_the_first_bodies_of_a_run_that_all_break_the_server_are_given_up(
    make_client, fake_server
):
    """Six bodies that break the server are the first requests of a run (a resumed run whose
    missing units are all such bodies): nothing of the run's own was ever served. Each is
    checked against its own shape, which is served: each is given up for its own sake, none
    stops the run, whatever how many there are."""
    fake_server.fault_when = poison_fails
    client = make_client(breaker_failures=10_000, body_fault_repeats=6)
    results = await asyncio.gather(
        *(client.chat(ask(f"poison {i}")) for i in range(6)), return_exceptions=True
    )
    assert all(isinstance(r, RequestFailed) and r.permanent for r in results), results


async def test_bodies_that_break_the_server_sent_beside_others_are_given_up(
    make_client, fake_server
):
    """Six bodies that break the server with one error, sent with twenty the endpoint
    serves: the others are served while the six are tested, and the six are then the last
    requests in flight, judged by the probes alone. Each is given up for its own sake; the
    run is not stopped as if the endpoint failed every request."""
    fake_server.fault_when = poison_fails
    client = make_client(breaker_failures=1000, body_fault_repeats=6)
    bodies = [f"poison {i}" for i in range(6)] + [f"ordinary {i}" for i in range(20)]
    results = await asyncio.gather(*(client.chat(ask(b)) for b in bodies), return_exceptions=True)
    assert all(isinstance(r, RequestFailed) and r.permanent for r in results[:6]), results
    assert not any(isinstance(r, BaseException) for r in results[6:]), results


async def test_a_body_whose_error_names_a_new_request_id_each_time_is_given_up(
    make_client, fake_server
):
    """OpenAI's 500 asks to quote a request id that is new in every answer: the same error
    all the same, so a body that breaks the server is given up after K tries, not deferred
    pass after pass."""
    fake_server.fault_when = lambda body: (
        "500_request_id" if body["messages"][-1]["content"] == "poison" else None
    )
    client = make_client(body_fault_repeats=4)
    await client.chat(ask("an ordinary body"))
    with pytest.raises(RequestFailed, match="the same error 4 times in a row") as given_up:
        await client.chat(ask("poison"))
    assert given_up.value.permanent


def test_an_errors_signature_leaves_out_what_changes_at_every_answer():
    """Ids, times and numbers change from one answer to the next; the provider's type, code
    and message do not. Anthropic puts its request id beside the error object."""

    def anthropic(request_id: str) -> bytes:
        error = {"type": "api_error", "message": "Internal server error"}
        return orjson.dumps({"type": "error", "error": error, "request_id": request_id})

    assert error_signature(500, anthropic("req_011CSHoEeqs5C35K2UUqR7Fy")) == error_signature(
        500, anthropic("req_01ABCdefGHIjkl9876543210")
    )
    oom = "CUDA out of memory. Tried to allocate {} GiB at {} (trace {})"
    first = oom.format("2.00", "2026-12-07T10:11:12Z", "3fa85f64-5717-4562-b3fc-2c963f66afa6")
    second = oom.format("3.50", "2026-12-07T10:11:13Z", "9c1b2d3e-0000-4562-b3fc-2c963f66afa6")
    assert error_signature(500, first.encode()) == error_signature(500, second.encode())
    assert error_signature(500, b'{"error": {"message": "worker died"}}') != error_signature(
        500, b'{"error": {"message": "server error"}}'
    )
    assert error_signature(500, anthropic("x")) != error_signature(502, anthropic("x"))


@pytest.mark.parametrize(
    ("between", "given_up"),
    [("503", True), ("520", True), ("500_request_id", False)],
    ids=["a gateway error", "a Cloudflare error", "another hard error"],
)
async def test_what_falls_between_a_bodys_failures(make_client, fake_server, between, given_up):
    """A body that breaks the server behind a gateway that fails now and then: every other
    try of it meets the gateway's 503, which names nothing of the body. That is no outcome of
    the body: its run of failures goes on and it is given up after K. Another hard error (a
    500 with other words) is an outcome: it ends the run, and the body is deferred."""
    seen = Counter()

    def poison_behind_a_gateway(body) -> str | None:
        if body["messages"][-1]["content"] != "poison":
            return None
        seen["poison"] += 1
        return between if seen["poison"] % 2 == 0 else "500"

    fake_server.fault_when = poison_behind_a_gateway
    client = make_client(body_fault_repeats=4, max_retries=10, breaker_failures=1000)
    await client.chat(ask("an ordinary body"))
    with pytest.raises(RequestFailed) as failed:
        await client.chat(ask("poison"))
    assert failed.value.permanent is given_up, failed.value


async def test_a_body_sent_twice_at_once_is_given_up_by_both(make_client, fake_server):
    """The same body sent by two requests at once shares one run of failures: once one
    gives it up, the other gives up at its next failure instead of counting again from one
    (K more tries of a body known to break the server)."""
    fake_server.fault_when = poison_fails
    fake_server.record_bodies = True
    client = make_client(body_fault_repeats=6, breaker_failures=1000)
    await client.chat(ask("an ordinary body"))
    both = [asyncio.ensure_future(client.chat(ask("poison"))) for _ in range(2)]
    _, pending = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    tried = tries(fake_server)["poison"]
    await asyncio.gather(*pending, return_exceptions=True)
    for request in both:
        assert isinstance(request.exception(), RequestFailed) and request.exception().permanent
    assert tries(fake_server)["poison"] <= tried + 1


async def test_a_probe_to_a_reasoning_model_stays_a_few_tokens(fake_server):
    """A reasoning model's limit goes with headroom for its hidden reasoning (8,192); a
    probe's must not, or a probe could cost thousands of tokens."""
    fake_server.reasoning_model = True
    fake_server.record_bodies = True
    fake_server.fault_when = poison_fails
    backend = OpenAIBackend(
        model="fake-model", base_url=fake_server.base_url, reasoning_headroom=8192
    )
    client = LLMClient(
        backend, admission=AdmissionSettings(backoff_base_s=0.01, body_fault_repeats=3)
    )
    try:
        await client.chat(ask("an ordinary body"))
        with pytest.raises(RequestFailed):
            await client.chat(ask("poison"))
    finally:
        await client.aclose()
    probes = [body for body in fake_server.seen_bodies if is_probe(body)]
    assert probes and {body.get("max_completion_tokens") for body in probes} == {PROBE_TOKENS}
    served = [body for body in fake_server.seen_bodies if "ordinary" in str(body["messages"])]
    assert served[-1]["max_completion_tokens"] == 64 + 8192


class SlowProbes(Backend):
    """Serves every request after `latency_s`."""

    max_concurrency = 4
    endpoint_id = "slow|probes"
    model = "m"

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s

    async def complete(self, request: ChatRequest) -> Completion:
        await asyncio.sleep(self.latency_s)
        return Completion("OK", "stop", 5, 1)


async def test_a_request_whose_probe_round_was_cancelled_under_it_probes_again():
    """Requests waiting for the endpoint share one round of probes, sent by the first. When
    that one is cancelled mid-round (its unit was stopped), the others have learnt nothing:
    they probe again, rather than take the round for one the endpoint did not serve (which
    would spend a retry of theirs)."""
    witness = Witness(SlowProbes(0.05), LocalAdmission(AdmissionSettings()), UsageLedger())
    first = asyncio.ensure_future(witness.served_since(0, patience_s=0.0))
    await asyncio.sleep(0.01)  # its round of probes is out
    second = asyncio.ensure_future(witness.served_since(0, patience_s=0.0))
    await asyncio.sleep(0.01)  # waiting for that round
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    assert await second is True


async def test_a_waiting_request_probes_as_soon_as_nothing_else_is_in_flight():
    """A request waits for one of the client's others to be served (woken when one is, not
    polling); when the last one in flight fails instead, it probes at once rather than after
    its patience."""
    witness = Witness(SlowProbes(0.01), LocalAdmission(AdmissionSettings()), UsageLedger())
    await witness.acquire()  # another request in flight

    async def that_request_fails() -> None:
        await asyncio.sleep(0.05)
        witness.release()  # failed: nothing was served

    failing = asyncio.ensure_future(that_request_fails())
    assert await asyncio.wait_for(witness.served_since(0, patience_s=60.0), timeout=5.0)
    await failing


def test_a_bodys_count_belongs_to_its_endpoint(tmp_path):
    """Two endpoints fail bodies with the same generic 500. One of them is found to fail
    every request so and forgets that error's counts: the other's count stays, and neither
    client loads the other's. A store an older glan made (no endpoint noted) keeps its
    counts readable."""
    path = tmp_path / "glan.sqlite"
    older = sqlite3.connect(path)
    older.execute(
        "CREATE TABLE failing_bodies (key TEXT PRIMARY KEY, signature TEXT NOT NULL, "
        "count INTEGER NOT NULL) WITHOUT ROWID"
    )
    older.execute("INSERT INTO failing_bodies VALUES ('an older glan noted', '500|older', 5)")
    older.commit()
    older.close()
    cache = ResponseCache(path)
    mine, theirs = BodyFaults(16, cache, "endpoint a"), BodyFaults(16, cache, "endpoint b")
    assert mine.run("an older glan noted").count == 5
    for faults, key in ((mine, "a's body"), (theirs, "b's body")):
        for successes in range(3):  # counted twice more, each after a success
            faults.failed(key, "500|server error", successes)
    assert BodyFaults(16, cache, "endpoint a").run("b's body") is None
    mine.forget("500|server error")
    assert cache.failing_bodies("endpoint a") == {"an older glan noted": ("500|older", 5)}
    assert cache.failing_bodies("endpoint b") == {
        "b's body": ("500|server error", 3),
        "an older glan noted": ("500|older", 5),
    }
    cache.close()
