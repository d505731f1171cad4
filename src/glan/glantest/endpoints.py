"""Endpoint specs: one compact string names a model anywhere glan can reach one.

    KIND[:MODEL][@BASE_URL][,FIELD=VALUE...]

KIND is a backend kind of glan.llm.settings (local, openai, and any kind added there);
FIELD is any setting of that kind (api_key_env, timeout_s, schema_mode, n_ctx, ...). Examples:
`local:smollm2`, `local:/models/qwen2.5-7b.gguf`, `openai:gpt-4o-mini`,
`openai:llama-3.1-8b@http://localhost:8000/v1`, `openai:gpt-4o,api_key_env=MY_KEY`.
Secrets never appear in a spec: a key is named by its environment variable.
"""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from glan.errors import UserError
from glan.llm import AdmissionSettings, BackendSettings, LLMClient, UsageLedger, create_backend
from glan.llm.settings import BACKEND_KINDS
from glan.store import ResponseCache

_SETTINGS: TypeAdapter[BackendSettings] = TypeAdapter(BackendSettings)
SPEC_HELP = "KIND[:MODEL][@BASE_URL][,FIELD=VALUE...], e.g. local:smollm2 or openai:MODEL@URL"


def parse_endpoint(spec: str) -> BackendSettings:
    """The backend settings a spec names; a malformed spec is a UserError naming it."""
    main, *options = [part.strip() for part in spec.strip().split(",")]
    head, at, url = main.partition("@")
    kind, _, model = head.partition(":")
    kind = kind.strip().lower()
    if kind not in BACKEND_KINDS:
        raise UserError(
            f"endpoint {spec!r}: unknown kind {kind!r} (kinds: {', '.join(BACKEND_KINDS)}; "
            f"a spec is {SPEC_HELP})"
        )
    data: dict[str, object] = {"backend": kind}
    if model.strip():
        data["model"] = model.strip()
    if at:
        data["base_url"] = url.strip()
    for option in options:
        key, eq, value = option.partition("=")
        if not eq or not key.strip():
            raise UserError(
                f"endpoint {spec!r}: expected FIELD=VALUE after a comma, got {option!r}"
            )
        data[key.strip()] = value.strip()
    try:
        return _SETTINGS.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"][1:]) or kind
        if err["type"] == "extra_forbidden":
            raise UserError(
                f"endpoint {spec!r}: {where} does not apply to the {kind} backend"
            ) from None
        raise UserError(f"endpoint {spec!r}: {where}: {err['msg']}") from None


def parse_labelled(items: list[str], what: str = "--model") -> dict[str, BackendSettings]:
    """LABEL=SPEC pairs, in the order given; labels must differ."""
    out: dict[str, BackendSettings] = {}
    for item in items:
        label, eq, spec = item.partition("=")
        label = label.strip()
        if not eq or not label or not spec.strip():
            raise UserError(f"{what} expects LABEL=SPEC (a spec is {SPEC_HELP}), got {item!r}")
        if label in out:
            raise UserError(f"{what}: the label {label!r} is given twice")
        out[label] = parse_endpoint(spec)
    return out


def describe(settings: BackendSettings) -> dict[str, str]:
    """What a report says about an endpoint: its kind, model and address (never a key)."""
    return dict(zip(("kind", "address", "model"), _padded(settings.identity()), strict=True))


def _padded(identity: tuple[str, ...]) -> tuple[str, str, str]:
    if len(identity) >= 3:
        return identity[0], identity[1], identity[2]
    return identity[0], "", identity[-1]


class Clients:
    """One LLMClient per distinct endpoint, sharing one cache and one usage ledger (two roles
    on the same endpoint share its limiter, as the generation stages do)."""

    def __init__(
        self, cache: ResponseCache, usage: UsageLedger, admission: AdmissionSettings
    ) -> None:
        self.cache = cache
        self.usage = usage
        self.admission = admission
        self._by_identity: dict[tuple[str, ...], LLMClient] = {}

    def get(self, settings: BackendSettings) -> LLMClient:
        key = settings.identity()
        client = self._by_identity.get(key)
        if client is None:
            backend = create_backend(settings, concurrency=self.admission.concurrency)
            limit = min(self.admission.concurrency, backend.max_concurrency)
            client = self._by_identity[key] = LLMClient(
                backend,
                cache=self.cache,
                admission=self.admission.model_copy(update={"concurrency": limit}),
                usage=self.usage,
            )
        return client

    async def ready(self) -> None:
        """Fail on a wrong URL or key before any work starts."""
        for client in self._by_identity.values():
            await client.ensure_ready()

    async def aclose(self) -> None:
        for client in self._by_identity.values():
            await client.aclose()
