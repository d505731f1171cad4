"""`glan generate` and `glan check`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from glan.cli.app import Opt, app, console, endpoint_config, fail, out, plural
from glan.errors import UserError


def parse_sets(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; values are read as YAML scalars (numbers, true/false, null, strings)."""
    import yaml

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            parsed[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed[key.strip()] = value
    return parsed


# The endpoint options `glan generate` shares with the commands that make data like it.
BackendOpt = Annotated[
    str | None, Opt(help="local, openai, vllm, openai-batch or anthropic-batch (all stages)")
]
ModelOpt = Annotated[str | None, Opt(help="model for all stages")]
BaseUrlOpt = Annotated[str | None, Opt(help="OpenAI-compatible endpoint URL")]
KeyEnvOpt = Annotated[str | None, Opt(help="name of the env variable with the key")]
ConcurrencyOpt = Annotated[int | None, Opt(help="requests in flight at most")]


def config_overrides(
    backend: str | None,
    model: str | None,
    base_url: str | None,
    api_key_env: str | None,
    concurrency: int | None,
    seed: int | None,
    set_: list[str] | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The options as dotted config overrides, and how the user wrote each (for errors).
    Without --backend the config decides: a base URL or a key variable means openai."""
    sets = parse_sets(set_ or [])
    overrides = {
        "llm.backend": backend,
        "llm.model": model,
        "llm.base_url": base_url,
        "llm.api_key_env": api_key_env,
        "concurrency": concurrency,
        "seed": seed,
        **sets,
    }
    options = {
        "llm.backend": "--backend",
        "llm.model": "--model",
        "llm.base_url": "--base-url",
        "llm.api_key_env": "--api-key-env",
        "concurrency": "--concurrency",
        "seed": "--seed",
    }
    return overrides, {**options, **{key: f"--set {key}" for key in sets}}


@app.command()
def generate(
    out_dir: Annotated[Path, Opt("--out", "-o", help="output directory (resumed if it exists)")],
    n: Annotated[int, Opt("-n", help="number of instruction pairs to make")],
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML config file")] = None,
    taxonomy: Annotated[Path | None, Opt("--taxonomy", "-t", help="taxonomy YAML")] = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    seed: Annotated[int | None, Opt(help="run seed")] = None,
    set_: Annotated[
        list[str] | None,
        Opt("--set", help="any config key, dotted: --set stages.answers.model=gpt-4o-mini"),
    ] = None,
    dry_run: Annotated[
        bool,
        Opt(
            "--dry-run",
            help="show planned calls, tokens, cost (of a directory holding a run: what its "
            "re-run would send); spend nothing",
        ),
    ] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no progress display")] = False,
    update: Annotated[
        bool,
        Opt(
            "--update",
            help="the directory was made with another taxonomy or stage settings: keep what "
            "still fits and re-make what changed",
        ),
    ] = False,
    shard: Annotated[
        str | None,
        Opt(help="I/K: make only the I-th of K disjoint sets of disciplines (see glan merge)"),
    ] = None,
    executor: Annotated[
        str | None, Opt(help="local (this process) or ray (a Ray cluster: docs/scale-out.md)")
    ] = None,
    ray_address: Annotated[
        str | None, Opt(help="Ray cluster: auto, ray://HOST:PORT (default: start one here)")
    ] = None,
    workers: Annotated[int | None, Opt(help="Ray workers (default: one per CPU)")] = None,
) -> None:
    """Walk the taxonomy down to N question-answer pairs. Re-running the command resumes."""
    from glan.api import plan as make_plan
    from glan.config import load_config
    from glan.executors import execute
    from glan.llm.usage import LOST_RESULTS
    from glan.pipeline import RunProgress
    from glan.taxonomy import load_taxonomy

    overrides, labels = config_overrides(
        backend, model, base_url, api_key_env, concurrency, seed, set_
    )
    executor_options = {
        "executor.kind": (executor, "--executor"),
        "executor.ray_address": (ray_address, "--ray-address"),
        "executor.workers": (workers, "--workers"),
    }
    for key, (value, flag) in executor_options.items():
        overrides.setdefault(key, value)
        labels.setdefault(key, flag)
    cfg = load_config(config, overrides, labels)
    tax = load_taxonomy(taxonomy)
    if n <= 0:
        fail(f"-n must be a positive number of pairs, got {n}")
    parsed_shard = parse_shard(shard) if shard else None
    if dry_run:
        from glan.cli.dry_run import print_dry_run, print_rerun
        from glan.run.stores import run_stores

        if run_stores(out_dir):  # a run is there: price what its re-run would send
            from glan.rerun import price_rerun

            price = price_rerun(cfg, tax, out_dir, n, update, parsed_shard)
            print_rerun(price, out_dir, cfg.adapted(), out)
        else:
            whole = make_plan(n, cfg, tax)
            print_dry_run(whole.shard(*parsed_shard) if parsed_shard else whole, cfg.adapted(), out)
        return
    progress = RunProgress()
    from glan.aio import sigterm_as_interrupt
    from glan.cli.progress import finished_line, show_progress, stopped_line

    with sigterm_as_interrupt() as terminated:
        try:
            with show_progress(progress, console, quiet):
                result = execute(cfg, tax, out_dir, n, progress, update, parsed_shard)
        except KeyboardInterrupt:
            how = "terminated" if terminated else "interrupted"
            console.print(
                stopped_line(how, out_dir, published_manifest(out_dir)),
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            # Everything is published and closed; skip interpreter teardown, which would wait
            # on (or free the model under) a local generation still running in its thread.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(143 if terminated else 130)
    m = result.manifest
    out.print(
        finished_line(m, n, result.out_dir / "instructions.jsonl"),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    lost = list(m["usage_this_invocation"].get(LOST_RESULTS, {}).values())
    if lost:
        lines = sum(r["requests"] for r in lost)
        tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in lost)
        console.print(
            f"warning: the results of {lines:,} batch lines were gone for good (see "
            f"batch_faults in manifest.json) and were sent again; the {tokens:,} tokens "
            f"(${sum(r['cost_usd'] for r in lost):.4f}) they had cost are lost",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    target = result.instructions + m["missing"]
    if m["missing"]:
        why = (
            f"{m['deferred_units']} units failed for a transient reason (the endpoint's): "
            "re-run the same command to make them"
            if m.get("deferred_units")
            else "see failures in manifest.json"
        )
        console.print(
            f"warning: {target - result.instructions} pairs short: {why}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        for too_large in m.get("deferred_too_large") or ():
            console.print(
                f"warning: {plural(too_large['requests'], 'request')} deferred: the endpoint "
                f"fails requests that large with {too_large['error']!r} while it serves smaller "
                "ones like them (its context or memory limit?); the same command tries again",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        raise typer.Exit(1)


def parse_shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise UserError(f"--shard expects I/K with 0 <= I < K, got {text!r}")
    return int(index), int(count)


def published_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest a stopped run published (None when there is none to read)."""
    import orjson

    try:
        manifest = orjson.loads((out_dir / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "counts" in manifest else None


@app.command()
def merge(
    out_dir: Annotated[Path, Opt("--out", "-o", help="where the merged run is written")],
    shards: Annotated[list[Path], typer.Argument(help="the shard run directories, all of them")],
) -> None:
    """Merge shard runs (glan generate --shard I/K) into one run. Records keep tree order."""
    from glan.run.merge import merge_shards

    counts = merge_shards(out_dir, shards)
    out.print(
        f"merged {len(shards)} shards: {counts['instructions']:,} pairs -> "
        f"{out_dir / 'instructions.jsonl'}",
        highlight=False,
        markup=False,
    )


@app.command()
def check(
    backend: Annotated[
        str, Opt(help="local, openai, vllm, openai-batch or anthropic-batch")
    ] = "openai",
    model: Annotated[str | None, Opt(help="model name")] = None,
    base_url: Annotated[str | None, Opt(help="endpoint URL")] = None,
    api_key_env: Annotated[str | None, Opt(help="name of the env variable with the key")] = None,
) -> None:
    """Check that an endpoint answers and takes the key. Online backends answer one tiny
    request; a batch API lists its batches (making one would take hours)."""
    from glan.aio import run
    from glan.cli.dry_run import where
    from glan.llm import ChatRequest, LLMClient, create_backend, user
    from glan.llm.settings import BATCH_KINDS, batch_api

    cfg = endpoint_config(backend, model, base_url, api_key_env)
    settings = cfg.llm
    if settings.backend in BATCH_KINDS:

        async def list_batches() -> None:
            api = batch_api(settings.model_dump())
            try:
                await api.check()
            finally:
                await api.aclose()

        run(list_batches())
        out.print(
            f"ok: {where(settings)} lists batches; {settings.model_name} is first asked "
            "in a run's first batch",
            highlight=False,
            soft_wrap=True,
        )
        return

    async def ping() -> str:
        client = LLMClient(create_backend(settings, concurrency=1))
        try:
            reply = await client.chat(
                ChatRequest(messages=user("Reply with the word: ready"), max_tokens=8)
            )
        finally:
            await client.aclose()
        return reply.text

    text = run(ping())
    out.print(
        f"ok: {where(settings)}, {settings.model_name}, answered {text.strip()[:60]!r}",
        highlight=False,
        soft_wrap=True,
    )
