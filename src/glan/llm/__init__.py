"""LLM access: one backend interface, admission, cache and accounting. Knows nothing of GLAN."""

from glan.llm.admission import Admission, AdmissionSettings, LocalAdmission
from glan.llm.backend import Backend, Completion
from glan.llm.client import LLMClient
from glan.llm.errors import EndpointDown, EndpointFatal, RequestFailed
from glan.llm.settings import BackendSettings, create_backend
from glan.llm.types import ChatRequest, ChatResponse, Message, Usage, user
from glan.llm.usage import Price, UsageLedger
from glan.llm.wire import MAX_WIRE_ITEMS, MAX_WIRE_LENGTH, wire_schema

__all__ = [
    "MAX_WIRE_ITEMS",
    "MAX_WIRE_LENGTH",
    "Admission",
    "AdmissionSettings",
    "Backend",
    "BackendSettings",
    "ChatRequest",
    "ChatResponse",
    "Completion",
    "EndpointDown",
    "EndpointFatal",
    "LLMClient",
    "LocalAdmission",
    "Message",
    "Price",
    "RequestFailed",
    "Usage",
    "UsageLedger",
    "create_backend",
    "user",
    "wire_schema",
]
