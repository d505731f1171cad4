"""The run's configuration: one YAML file, overridable from the CLI, validated with pydantic.

Every stage has its own backend, model and sampling settings; unset fields fall back to the
top-level `llm` block, so "a strong model for questions, a cheap one for answers" is two lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from glan.config_errors import Sources, first_error
from glan.errors import UserError
from glan.llm.batch.options import BatchOptions
from glan.llm.settings import (
    BACKEND_KINDS,
    AnyBackendSettings,
    BackendSettings,
    LocalSettings,
)
from glan.llm.usage import Price
from glan.yamlfile import load_yaml

StageName = Literal["subjects", "syllabus", "questions", "answers"]
STAGES: tuple[StageName, ...] = ("subjects", "syllabus", "questions", "answers")


class StageSettings(BaseModel):
    """Per-stage overrides; None means: take the `llm` block's value (or the stage default)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "openai", "vllm", "openai-batch", "anthropic-batch"] | None = Field(
        None, description="another backend kind for this stage"
    )
    model: str | None = Field(None, description="another model for this stage")
    base_url: str | None = Field(None, description="another endpoint for this stage")
    api_key_env: str | None = Field(
        None, description="the variable holding this stage's API key (never the key)"
    )
    api_version: str | None = Field(None, description="Azure's api-version (openai-batch)")
    temperature: float | None = Field(
        None, ge=0, le=2, description="sampling temperature (paper: 1.0; answers 0.7)"
    )
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling (paper: 0.95)")
    max_tokens: int | None = Field(None, ge=16, description="reply length cap in tokens")


# The paper's sampling settings (GLAN.md): GPT-4 at 1.0/0.95 for the tree, 0.7/0.95 for answers.
STAGE_DEFAULTS: dict[str, dict[str, float | int]] = {
    "subjects": {"temperature": 1.0, "top_p": 0.95, "max_tokens": 2048},
    "syllabus": {"temperature": 1.0, "top_p": 0.95, "max_tokens": 3072},
    "questions": {"temperature": 1.0, "top_p": 0.95, "max_tokens": 768},
    "answers": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 1536},
}
# The 135M embedded model is slow and loops when left to run on: smaller syllabi and replies keep
# a laptop run short. Only that model gets these; any other local GGUF gets the normal sizes.
TINY_MAX_TOKENS = {"subjects": 1024, "syllabus": 1024, "questions": 256, "answers": 384}


class PlanSettings(BaseModel):
    """How the target count is spread down the tree (see glan.planner)."""

    model_config = ConfigDict(extra="forbid")

    min_pairs_per_discipline: int = Field(
        5, ge=1, description="small runs touch fewer disciplines, each with at least this many"
    )
    pairs_per_subject: int = Field(5, ge=1, description="target pairs per subject before capping")
    max_subjects_per_discipline: int = Field(150, ge=1, description="paper: 100-200")
    subjects_per_call: int = Field(15, ge=1, le=50, description="subjects one listing call returns")
    max_subject_samples: int = Field(10, ge=1, description="paper: 10 queries per discipline")


class SyllabusSettings(BaseModel):
    """How large the syllabi asked for are (the embedded tiny model gets smaller ones)."""

    model_config = ConfigDict(extra="forbid")

    min_sessions: int = Field(10, ge=1, description="paper: 10-30 class sessions")
    max_sessions: int = Field(30, ge=1, description="paper: 10-30 class sessions")
    min_concepts: int = Field(2, ge=1, description="key concepts per session, at least")
    max_concepts: int = Field(6, ge=1, description="paper: about 5 key concepts per session")

    @model_validator(mode="after")
    def _ordered(self) -> SyllabusSettings:
        if self.min_sessions > self.max_sessions or self.min_concepts > self.max_concepts:
            raise ValueError("min_sessions/min_concepts must not exceed their max")
        return self


class QuestionSettings(BaseModel):
    """How homework questions are sampled (the paper's two strategies)."""

    model_config = ConfigDict(extra="forbid")

    multi_ratio: float = Field(
        0.5, ge=0, le=1, description="share of questions from two sessions (the harder strategy)"
    )
    question_type: str | None = Field(None, description="e.g. 'multiple choice'; off by default")
    difficulty: str | None = Field(None, description="e.g. 'challenging'; off by default")


class ExecutorSettings(BaseModel):
    """Where the walk runs: in this process (local), or as shards on a Ray cluster (ray, see
    docs/scale-out.md). Never part of what shapes the records: every executor makes the same."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ray"] = Field(
        "local", description="local: this process; ray: shards on a Ray cluster"
    )
    ray_address: str | None = Field(
        None, description="auto, ray://HOST:PORT, or unset: a local cluster on this machine"
    )
    workers: int | None = Field(None, ge=1, description="Ray workers (default: the cluster's CPUs)")
    worker_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves for each worker")
    shards_per_worker: int = Field(
        8, ge=1, description="the run is cut into this many shards per worker, pulled as they free"
    )


class GenerateConfig(BaseModel):
    """Everything that shapes a `glan generate` run (the YAML given with --config)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="the run's seed: the same seed and inputs give the same run")
    concurrency: int = Field(
        32, ge=1, description="requests in flight at an HTTP endpoint (across all workers)"
    )
    work_window: int | None = Field(
        None,
        ge=2,
        description="how many requests the walk keeps open (default: twice the largest "
        "number a stage's transport takes in flight; batch transports take many more)",
    )
    llm: BackendSettings = Field(
        default_factory=LocalSettings,
        description="the backend every stage uses unless `stages` says otherwise",
    )
    stages: dict[StageName, StageSettings] = Field(
        default_factory=dict,
        description="per-stage overrides: subjects, syllabus, questions, answers",
    )
    subjects_mode: Literal["structured", "two_turn"] = Field(
        "structured",
        description="structured: one schema-constrained call; two_turn: free text, then a "
        "formatting turn (the paper's way: format instructions can hurt the list's quality)",
    )
    plan: PlanSettings = Field(
        default_factory=PlanSettings, description="how N is spread down the tree"
    )
    syllabus: SyllabusSettings = Field(
        default_factory=SyllabusSettings, description="syllabus sizes asked for"
    )
    questions: QuestionSettings = Field(
        default_factory=QuestionSettings, description="question sampling"
    )
    prices: dict[str, Price] = Field(
        default_factory=dict, description="USD per 1M tokens, by model"
    )
    batch: BatchOptions = Field(
        default_factory=BatchOptions, description="batch backends: sizes, polling, rounds"
    )
    max_retries: int = Field(
        6, ge=0, description="retries of one request on 5xx, timeouts and resets"
    )
    breaker_failures: int = Field(
        20, ge=1, description="failures in a row (and no success for the window) that stop the run"
    )
    breaker_window_s: float = Field(
        120.0,
        gt=0,
        description="how long an endpoint may fail, or answer only rate limits, before the run "
        "stops (finished work is kept; the same command resumes)",
    )
    executor: ExecutorSettings = Field(
        default_factory=ExecutorSettings,
        description="where the run executes: local (one process) or a Ray cluster",
    )
    _sampling: dict[str, dict[str, float | int]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_backend_kind(cls, data: Any) -> Any:
        """`llm:` without `backend:` is the local kind, as before settings had kinds; with a
        base URL or an API key variable, which only an HTTP endpoint reads, it is openai."""
        if isinstance(data, dict) and isinstance(data.get("llm"), dict):
            remote = any(data["llm"].get(k) is not None for k in ("base_url", "api_key_env"))
            data = {**data, "llm": {"backend": "openai" if remote else "local", **data["llm"]}}
        return data

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any:
        copy = super().model_copy(update=update, deep=deep)
        copy._sampling = {}  # an update may change what the memo was computed from
        return copy

    def backend_for(self, stage: StageName) -> AnyBackendSettings:
        """The `llm` block with the stage's overrides; a stage may switch to another kind."""
        override = self.stages.get(stage, StageSettings())
        fields = {
            name: getattr(override, name)
            for name in ("model", "base_url", "api_key_env", "api_version")
            if getattr(override, name) is not None
        }
        base = self.llm
        kind = override.backend
        if kind is None and base.backend == "local" and {"base_url", "api_key_env"} & set(fields):
            kind = "openai"  # as for the llm block: only an HTTP endpoint reads these
        if kind is not None and kind != base.backend:
            base = BACKEND_KINDS[kind]()
        unknown = set(fields) - set(type(base).model_fields)
        if unknown:
            raise UserError(
                f"stages.{stage}: {', '.join(sorted(unknown))} does not apply to the "
                f"{base.backend} backend"
            )
        return base.model_copy(update=fields)

    def sampling_for(self, stage: StageName) -> dict[str, float | int]:
        """The stage's temperature, top_p and max_tokens (memoised: read once per request)."""
        cached = self._sampling.get(stage)
        if cached is None:
            cached = self._sampling[stage] = self._compute_sampling(stage)
        return cached

    def _compute_sampling(self, stage: StageName) -> dict[str, float | int]:
        override = self.stages.get(stage, StageSettings())
        values = dict(STAGE_DEFAULTS[stage])
        if self.backend_for(stage).tiny:
            values["max_tokens"] = TINY_MAX_TOKENS[stage]
        for name in ("temperature", "top_p", "max_tokens"):
            if getattr(override, name) is not None:
                values[name] = getattr(override, name)
        return values

    def adapted(self) -> GenerateConfig:
        """Shrink unset syllabus and listing sizes when every stage runs on the embedded tiny
        model (a 135M model cannot write a 30-session syllabus); other models keep the paper's."""
        if not all(self.backend_for(s).tiny for s in STAGES):
            return self
        syllabus = self.syllabus
        if "min_sessions" not in syllabus.model_fields_set:
            syllabus = syllabus.model_copy(update={"min_sessions": 3})
        if "max_sessions" not in syllabus.model_fields_set:
            syllabus = syllabus.model_copy(update={"max_sessions": 5})
        if "max_concepts" not in syllabus.model_fields_set:
            syllabus = syllabus.model_copy(update={"max_concepts": 4})
        plan = self.plan
        if "subjects_per_call" not in plan.model_fields_set:
            plan = plan.model_copy(update={"subjects_per_call": 4})
        return self.model_copy(update={"syllabus": syllabus, "plan": plan, "concurrency": 1})

    def stage_inputs(self) -> dict[str, Any]:
        """What shapes each stage's records, for telling a resumable re-run from one that
        would silently change the data (glan.run.rundir compares these)."""

        def stage(name: StageName, extra: dict[str, Any]) -> dict[str, Any]:
            return {
                "endpoint": list(self.backend_for(name).identity()),
                "sampling": self.sampling_for(name),
                **extra,
            }

        return {
            "seed": self.seed,
            "plan": self.plan.model_dump(),
            "subjects": stage("subjects", {"mode": self.subjects_mode}),
            "syllabus": stage("syllabus", {"sizes": self.syllabus.model_dump()}),
            "questions": stage("questions", {"settings": self.questions.model_dump()}),
            "answers": stage("answers", {}),
        }


def load_config(
    path: Path | None,
    overrides: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> GenerateConfig:
    """The config file (if any) with CLI overrides applied on top (dotted keys allowed).
    `labels` says how the user wrote each override (an error names it instead of the file)."""
    data: dict[str, Any] = {}
    if path is not None:
        loaded = load_yaml(path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: the config must be a mapping of keys to values")
        data = loaded
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = _override_path(dotted)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    sources = Sources(path, overrides or {}, labels or {})
    try:
        cfg = GenerateConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(first_error(exc, sources)) from None
    _check_local_models(cfg, sources)
    return cfg


def _override_path(dotted: str) -> list[str]:
    """The keys of a dotted override. A model's name may hold dots (`gpt-4.1`), so under
    `prices` the model is all between `prices.` and a price field (or the end)."""
    head, _, rest = dotted.partition(".")
    if head != "prices" or not rest:
        return dotted.split(".")
    model, _, field = rest.rpartition(".")
    if model and field in Price.model_fields:
        return [head, model, field]
    return [head, rest]


def _check_local_models(cfg: GenerateConfig, sources: Sources) -> None:
    """A model the local backend cannot load (gpt-4o-mini, say) was meant for another backend:
    refused here, naming the one to choose, rather than planned at $0 and failed at load."""
    from glan.llm.local import loads_locally

    for stage in STAGES:
        settings = cfg.backend_for(stage)
        if settings.backend != "local" or loads_locally(settings.model):
            continue
        override = cfg.stages.get(stage)
        own = override is not None and override.model is not None
        key = f"stages.{stage}" if own else "llm"
        source = sources.blame([*key.split("."), "model"])
        url = f"{key}.base_url"
        if source.startswith("--"):
            url = "--base-url URL" if key == "llm" else f"--set {key}.base_url=URL"
        raise UserError(
            f"{source}: {key}.model {settings.model!r} is not a model the local backend (the "
            "default) loads: smollm2, a .gguf file or a hub id owner/repo[:file]. For an "
            f"OpenAI-compatible endpoint {sources.fix(source, f'{key}.backend', 'openai')} "
            f"(and {url} for a server other than api.openai.com)"
        )
