"""A random-initialised Llama with SmolLM2's real tokenizer and chat template, for tests of the
training and evaluation plumbing (masking, saving, resuming, lm-eval wiring), offline and fast.
Its outputs mean nothing; only the mechanics are under test."""

from __future__ import annotations

from pathlib import Path

import orjson


def make_tiny_llama(target: Path, hidden: int = 64, layers: int = 2) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from glan.train.models import packaged_smollm2

    gguf = packaged_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    import torch

    with torch.random.fork_rng():  # the same weights in every session: a test's figures repeat
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def write_pairs_run(run_dir: Path, n: int) -> Path:
    """A run directory whose instructions.jsonl holds n short, learnable arithmetic pairs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        a, b = i % 9 + 1, i % 7 + 2
        messages = [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
        ]
        record = {"id": f"pair-{i}", "messages": messages, "meta": {"discipline": "Mathematics"}}
        lines.append(orjson.dumps(record))
    (run_dir / "instructions.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return run_dir
