"""User labels of concepts: a small JSON store outside the atlas that survives restarts and rebuilds.

The server never writes the atlas, so labels typed in the explorer live in their own
file (by default ``<atlas>.labels.json`` beside the atlas folder). They are keyed by
the identity of the output lens (``lens_identity``: a digest of the published SAE's
weights), not by the atlas: rebuilding an atlas with the same SAE keeps every label,
while an atlas built on another SAE, whose concept ids mean other things, starts blank.

File layout::

    {"format": 1, "lenses": {"<lens identity>": {"<concept id>": "<label>", ...}, ...}}

Every write replaces the file atomically (a temporary file in the same folder, then
``os.replace``), so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import threading
import unicodedata
from pathlib import Path

from precompute.errors import BlindspotError
from precompute.fileio import atomic_path
from precompute.digests import digest_of, file_digest

FORMAT = 1
MAX_LABEL = 200  # characters; labels are chips and tooltips, not prose
OUTPUT_SAE_WEIGHTS = "models/output-sae/model.safetensors"


class LabelError(BlindspotError):
    """A label that cannot be stored (empty after trimming, too long, control characters) or an unreadable store."""


def default_label_path(atlas: Path) -> Path:
    """``<atlas>.labels.json`` beside the atlas folder (outside it, so a rebuild never touches it)."""
    atlas = Path(atlas).resolve()
    return atlas.with_name(atlas.name + ".labels.json")


def lens_identity(atlas_root: Path, info: dict[str, str]) -> str:
    """The output lens an atlas' concept ids belong to.

    A digest of the published output-lens SAE's weights when the atlas has them; else a
    digest of the run config's ``encode`` section (energy model, SAE path, size), which
    names the same lens for rebuilds of one config.
    """
    weights = Path(atlas_root) / OUTPUT_SAE_WEIGHTS
    if weights.is_file():
        return "sae-" + file_digest(weights)
    try:
        encode = json.loads(info.get("config", "{}")).get("encode", {})
    except json.JSONDecodeError:
        encode = {}
    return "config-" + digest_of(encode)


def clean_label(text: str) -> str:
    """A label as stored: runs of white space made one space, trimmed; refused (``LabelError``) when empty
    after trimming, longer than ``MAX_LABEL`` characters or holding control characters."""
    label = " ".join(str(text).split())
    if not label:
        raise LabelError("a label must not be empty (after trimming white space); to show the automatic label "
                         "again, remove yours")
    if len(label) > MAX_LABEL:
        raise LabelError(f"a label has at most {MAX_LABEL} characters, got {len(label)}")
    if any(unicodedata.category(ch).startswith("C") for ch in label):
        raise LabelError("a label must be plain text without control characters")
    return label


class LabelStore:
    """The user labels of one output lens, read once and written through on every change."""

    def __init__(self, path: Path, lens: str):
        self.path = Path(path)
        self.lens = lens
        self._lock = threading.Lock()
        self._document = self._read()
        self._labels: dict[int, str] = {int(k): v for k, v in self._document["lenses"].get(lens, {}).items()}

    def _read(self) -> dict:
        if not self.path.is_file():
            return {"format": FORMAT, "lenses": {}}
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LabelError(f"cannot read the label store {self.path}: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(
                document.get("lenses"), dict):
            raise LabelError(f"{self.path} is not a label store of format {FORMAT} (move it away to start afresh)")
        return document

    def get(self, concept: int) -> str | None:
        return self._labels.get(int(concept))

    def all(self) -> dict[int, str]:
        """Every user label of this lens, concept id -> label."""
        with self._lock:
            return dict(self._labels)

    def set(self, concept: int, text: str) -> str:
        """Store the label of ``concept`` (refused, the old label kept, when ``clean_label`` refuses it); return it."""
        label = clean_label(text)
        with self._lock:
            self._labels[int(concept)] = label
            self._save()
        return label

    def remove(self, concept: int) -> None:
        """Drop the user's label of ``concept``: the automatic label shows again."""
        with self._lock:
            self._labels.pop(int(concept), None)
            self._save()

    def _save(self) -> None:
        self._document["lenses"][self.lens] = {str(k): v for k, v in sorted(self._labels.items())}
        self._write()

    def _write(self) -> None:
        with atomic_path(self.path) as temp, open(temp, "w", encoding="utf-8") as out:
            json.dump(self._document, out, ensure_ascii=False, indent=1)
            out.flush()
            os.fsync(out.fileno())  # a user's labels survive a power cut, not only a killed server
