"""What a stage's reply parser raises when a reply is schema-valid but unusable."""

from __future__ import annotations


class Rejected(ValueError):
    """A reply to re-ask: `kind` is counted in the manifest, the message goes to the model."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
