"""Optional concept labels from a vision-language model behind an OpenAI-compatible endpoint.

Seed 001 appendix F.2 found that a VLM describes an SAE concept reliably only when it
sees an alpha-masked image: the exemplar with every area where the concept is absent
removed (a heatmap overlay or the raw image distract it). This module builds that
image from an exemplar and its token map and asks the user's endpoint
(``POST {endpoint}/chat/completions``) for a short description. It is off unless
the config names an endpoint; any failure leaves the concept unlabelled and the run
goes on.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from dataclasses import dataclass

import httpx
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

# Appendix F.2's best-performing prompt, asking for the description only (the paper's
# note on making it scale).
PROMPT = ("You are given an image where only areas that contain a concept identified by a DINOv2-based SAE are "
          "preserved; areas without the concept were removed. Describe what is this concept. "
          "Answer with the description only, in at most six words.")


def alpha_masked(image: Image.Image, heatmap: np.ndarray) -> bytes:
    """PNG bytes of ``image`` whose alpha is the concept's token map, upsampled and scaled to [0, 255]."""
    rgb = image.convert("RGB")
    peak = float(heatmap.max())
    normalised = heatmap / peak if peak > 0 else np.zeros_like(heatmap, dtype=np.float32)
    mask = Image.fromarray((normalised * 255).astype(np.uint8)).resize(rgb.size, Image.BILINEAR)
    rgba = rgb.copy()
    rgba.putalpha(mask)
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class VLMLabeler:
    """Asks an OpenAI-compatible chat endpoint to name a concept from its alpha-masked exemplar."""

    endpoint: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 30.0

    def label(self, client: httpx.Client, masked_png: bytes) -> str | None:
        """The VLM's short description, or None when the request or its answer fails."""
        image_url = "data:image/png;base64," + base64.b64encode(masked_png).decode()
        body = {
            "model": self.model,
            "max_tokens": 32,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": PROMPT},
                {"type": "image_url", "image_url": {"url": image_url}},
            ]}],
        }
        headers = {}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            answer = client.post(f"{self.endpoint.rstrip('/')}/chat/completions", json=body, headers=headers,
                                 timeout=self.timeout_s)
            answer.raise_for_status()
            text = answer.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("VLM label failed: %s", exc)
            return None
        text = " ".join(str(text).split()).strip(" .\"'")
        return text[:120] or None

    def label_many(self, masked: dict[int, bytes]) -> dict[int, str]:
        """Labels for ``{concept: masked_png}``; concepts whose request failed are left out."""
        labels = {}
        with httpx.Client() as client:
            for concept, png in masked.items():
                text = self.label(client, png)
                if text:
                    labels[concept] = text
        return labels
