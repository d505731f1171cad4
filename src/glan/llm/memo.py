"""Remembering what was derived from a dict, by the dict's identity (dicts are not hashable)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class IdentityMemo(Generic[V]):
    """`compute(obj)`, remembered per object: for the few long-lived objects a hot path passes
    again and again (the stage schemas sent with every request).

    An entry holds its object, so the object's id cannot be reused while the entry lives. The
    table is cleared when full: callers that pass a fresh object each time pay one `compute`
    each and never grow it, and the long-lived objects come back at their next use.
    """

    def __init__(self, compute: Callable[[Any], V], limit: int = 64) -> None:
        self._compute = compute
        self._limit = limit
        self._table: dict[int, tuple[Any, V]] = {}

    def __call__(self, obj: Any) -> V:
        hit = self._table.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        value = self._compute(obj)
        if len(self._table) >= self._limit:
            self._table.clear()
        self._table[id(obj)] = (obj, value)
        return value
