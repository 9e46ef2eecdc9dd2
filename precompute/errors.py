"""Domain errors of the pipeline.

Every error a user can cause by their input (a config, a data folder, a model path)
is a ``BlindspotError`` whose message says what was expected and what came. The CLI
prints these without a traceback; the web app answers each with its ``status`` (an
HTTP status: 422 unless a subclass says otherwise) in one handler (``app.errors``).
"""

from __future__ import annotations


class BlindspotError(Exception):
    """Base of every error caused by the user's input rather than by a bug."""

    status = 422  # how the web app answers it: input it understood but cannot use

    def headers(self) -> dict[str, str] | None:
        """Headers the answer carries (``Retry-After`` for a full queue), or None."""
        return None


class ConfigError(BlindspotError):
    """A run config that cannot be used: unknown key, wrong type, missing file."""


class DataError(BlindspotError):
    """A data source that cannot be read at all (not a single bad item: those are skipped)."""


class BadItem(BlindspotError):
    """One item that cannot be used; the run skips it and records ``reason``.

    ``reason`` is a short stable code (``undecodable``, ``empty-file``, ...) so the
    manifest can count skips by reason; ``detail`` is the human explanation.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class AtlasError(BlindspotError):
    """An atlas folder that is missing, half-written or of an unknown schema."""
