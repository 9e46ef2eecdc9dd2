"""Train the world encoder on world images with a supervised multi-task objective.

Supervised, and said so: the world's ground truth is exact, so we use it instead of
a self-supervised objective (DINOv2's) that would need far more compute to reach
the same linear readability. The targets make the *patch* tokens carry local
concept information, which is what the output lens's SAE sees (seed 001, section 3):

- image level, from the CLS token and from the mean patch token: multi-label
  presence of every world concept (shapes, colours, patterns, counts, sizes,
  positions, backgrounds, extras);
- patch level, from each patch token: the share of the patch covered by an object;
  the object's shape, colour and pattern at object patches; the background at
  background patches; the share covered by each extra (shadow, frame, sun).

Extras have no masks in a ``WorldSample``, so each one present is localised by
rendering the same scene without it from the same random stream and taking the
pixels that change (the renderer keeps its draws aligned so that toggling an extra
changes only that extra's pixels). That needs the render stream, which ``World``
keeps to itself, so training items are drawn here from the world's public parts
(``sample_scene`` with the world's prior, ``render``) with per-item streams keyed by
``(seed, index)``: the same distribution as ``World(seed)``, disjoint from the demo's
world (seed 0) by construction. Defaults train on seed 1000 and report held-out
metrics on seed 1001.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from precompute.encoders.probe import auroc, fit_linear_probe
from precompute.encoders.world_encoder import WorldEncoder, WorldEncoderConfig, world_pixels
from precompute.errors import ConfigError
from precompute.fileio import write_text_atomic
from precompute.schedules import warmup_cosine
from precompute.world.concepts import CONCEPT_INDEX, Prior, sample_scene
from precompute.world.render import render
from precompute.world.truth import concept_matrix

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]
#: pixels whose value changes by more than this (of 255) when an extra is removed belong to it
EXTRA_THRESHOLD = 6
#: patches where an object covers at least this share learn the object's shape, colour and
#: pattern: edge patches included, since they see the outline that tells shapes apart
OBJECT_PATCH = 0.1
#: patches where objects cover less than this share learn the background
BACKGROUND_PATCH = 0.5
#: weight of each concept's BCE in the presence terms (about 1 per family of ~6-10 concepts)
PRESENCE_SCALE = 0.1

# the settings that made the shipped weights (see TRAINING.md)
DEFAULT_STEPS, DEFAULT_BATCH_SIZE, DEFAULT_SEED, DEFAULT_N_IMAGES, DEFAULT_LR = 1600, 64, 1000, 30_000, 2e-3


@dataclass(frozen=True)
class WorldTrainingSet:
    """Rendered world images with the encoder's targets.

    ``images`` (n, size, size, 3) uint8; ``presence`` (n, n_concepts) bool;
    ``cover`` (n, 1 + n_extras, side, side) float32: per patch, the share covered by
    any object, then by each extra; ``classes`` (n, n_families) int64: the index of
    the scene's value in each patch family (shape, colour, pattern, background).
    """

    images: np.ndarray
    presence: np.ndarray
    cover: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, items: slice) -> WorldTrainingSet:
        """The items selected by ``items``, every array sliced alike."""
        return WorldTrainingSet(self.images[items], self.presence[items], self.cover[items], self.classes[items])


def render_training_set(
    seed: int, n: int, config: WorldEncoderConfig | None = None, progress: Progress | None = None
) -> WorldTrainingSet:
    """Draw and render ``n`` world items of training seed ``seed`` with their targets."""
    config = config or WorldEncoderConfig()
    size, side, prior = config.image_size, config.side, Prior.default()
    images = np.empty((n, size, size, 3), np.uint8)
    pixel_cover = np.zeros((n, 1 + len(config.patch_extras), size, size), bool)
    scenes = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        scene = sample_scene(rng, prior)
        render_seed = int(rng.integers(2**63))
        drawn = render(scene, size, np.random.default_rng(render_seed))
        images[i] = drawn.image
        pixel_cover[i, 0] = drawn.masks.any(axis=0)
        for slot, extra in enumerate(config.patch_extras, start=1):
            if extra in scene.extras:
                without = render(
                    replace(scene, extras=scene.extras - {extra}), size, np.random.default_rng(render_seed)
                )
                change = np.abs(drawn.image.astype(np.int16) - without.image.astype(np.int16)).max(axis=-1)
                pixel_cover[i, slot] = change > EXTRA_THRESHOLD
        scenes.append(scene)
        if progress is not None and (i + 1) % 1000 == 0:
            progress({"phase": "render", "done": i + 1, "total": n})
    patch = config.patch_size
    cover = pixel_cover.reshape(n, -1, side, patch, side, patch).mean(axis=(3, 5), dtype=np.float32)
    presence = concept_matrix(scenes)[:, [CONCEPT_INDEX[name] for name in config.concepts]]
    classes = np.array(
        [[members.index(scene.value(family)) for family, members in config.patch_families.items()] for scene in scenes],
        dtype=np.int64,
    )
    return WorldTrainingSet(images, presence, cover, classes)


def multitask_loss(model: WorldEncoder, pixels: Tensor, targets: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """The training objective (see the module docstring): a sum of BCE and CE terms."""
    tokens = model.trunk(pixels)
    concepts = model.concept_logits(tokens)
    patches = model.patch_logits(tokens)
    presence = targets["presence"]
    cover = targets["cover"].flatten(2)  # (B, 1 + n_extras, P)
    object_cover = cover[:, 0]
    # Presence terms are summed over concepts (scaled by PRESENCE_SCALE), not averaged:
    # averaged over ~57 mostly-absent concepts, each concept's gradient is too weak
    # beside the per-patch classification terms for count, position or shape to be learned.
    terms = {
        "presence_cls": _bce_sum(concepts["cls"], presence) * PRESENCE_SCALE,
        "presence_pooled": _bce_sum(concepts["pooled"], presence) * PRESENCE_SCALE,
        "cover": F.binary_cross_entropy_with_logits(patches["cover"], object_cover),
        "extras": _bce_sum(patches["extras"], (cover[:, 1:] > 0).float().transpose(1, 2)),
    }
    touches_object = object_cover >= OBJECT_PATCH  # (B, P)
    is_background = object_cover < BACKGROUND_PATCH
    for column, family in enumerate(model.config.patch_families):
        where = is_background if family == "background" else touches_object
        labels = targets["classes"][:, column, None].expand_as(where)
        terms[family] = F.cross_entropy(patches[family][where], labels[where]) if where.any() else tokens.sum() * 0
    total = sum(terms.values())
    return total, {name: float(value.detach()) for name, value in terms.items()}


def _bce_sum(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy summed over the last dimension, averaged over the rest."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(dim=-1).mean()


def _targets(data: WorldTrainingSet, index: np.ndarray) -> dict[str, Tensor]:
    return {
        "presence": torch.from_numpy(data.presence[index]).float(),
        "cover": torch.from_numpy(data.cover[index]),
        "classes": torch.from_numpy(data.classes[index]),
    }


@torch.no_grad()
def encode_set(model: WorldEncoder, images: np.ndarray, batch_size: int = 500, trunk: bool = False) -> Tensor:
    """Tokens (n, 1 + side^2, dim) of a uint8 image array, float32: the model's, or its trunk's."""
    forward = model.trunk if trunk else model
    chunks = [
        forward(world_pixels(images[i : i + batch_size], model.config.image_size))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks).float()


def evaluate(model: WorldEncoder, probe_set: WorldTrainingSet, test_set: WorldTrainingSet) -> dict[str, Any]:
    """Held-out metrics: per-concept AUROC of the trained heads and of a fresh linear probe.

    The probe (one logistic regression per concept on the mean patch token) is
    fitted on ``probe_set`` and scored on ``test_set``, like the tests do; patch
    accuracies are measured on ``test_set`` at object / background patches.
    """
    model.eval()
    probe_tokens = encode_set(model, probe_set.images, trunk=True)
    test_tokens = encode_set(model, test_set.images, trunk=True)
    labels = torch.from_numpy(test_set.presence)
    probe = fit_linear_probe(probe_tokens[:, 1:].mean(dim=1), torch.from_numpy(probe_set.presence))
    with torch.no_grad():
        heads = model.concept_logits(test_tokens)
        patch_logits = model.patch_logits(test_tokens)
        probe_scores = probe(test_tokens[:, 1:].mean(dim=1))
    names = model.config.concepts
    report: dict[str, Any] = {}
    for label, scores in (
        ("probe_pooled_patches", probe_scores),
        ("head_pooled", heads["pooled"]),
        ("head_cls", heads["cls"]),
    ):
        per_concept = auroc(scores, labels)
        valid = ~per_concept.isnan()
        worst = int(torch.where(valid, per_concept, torch.tensor(2.0)).argmin())
        report[label] = {
            "mean_auroc": round(float(per_concept[valid].mean()), 4),
            "min_auroc": round(float(per_concept[worst]), 4),
            "min_concept": names[worst],
            "per_concept": {n: round(float(a), 4) for n, a in zip(names, per_concept.tolist(), strict=True)},
        }
    object_cover = torch.from_numpy(test_set.cover).flatten(2)[:, 0]
    classes = torch.from_numpy(test_set.classes)
    accuracy = {}
    for column, family in enumerate(model.config.patch_families):
        where = object_cover < BACKGROUND_PATCH if family == "background" else object_cover >= OBJECT_PATCH
        hits = patch_logits[family].argmax(dim=-1) == classes[:, column, None]
        accuracy[family] = round(float(hits[where].float().mean()), 4)
    report["patch_accuracy"] = accuracy
    return report


def train_world_encoder(
    out_dir: str | Path,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = DEFAULT_SEED,
    progress: Progress | None = None,
    *,
    n_images: int = DEFAULT_N_IMAGES,
    n_eval: int = 2_000,
    lr: float = DEFAULT_LR,
    weight_decay: float = 0.05,
    config: WorldEncoderConfig | None = None,
    threads: int | None = 2,
) -> dict[str, Any]:
    """Train a world encoder and save it (``config.json`` + ``model.safetensors``) to ``out_dir``.

    Renders ``n_images`` training items of world seed ``seed`` once, trains for
    ``steps`` AdamW steps of ``batch_size`` images (warm-up 5%, cosine decay), then
    evaluates on ``2 * n_eval`` items of seed ``seed + 1`` (half to fit the linear
    probe, half to score it). ``progress`` receives dicts: ``{"phase": "render",
    "done", "total"}`` while rendering, ``{"phase": "train", "step", "steps",
    "loss", ...}`` every 50 steps. Returns the report (also written to
    ``out_dir/training.json``). ``threads`` sets torch's CPU thread count for the
    process (``None`` leaves it). Deterministic for a given seed and thread count.
    """
    for name, value, minimum in (
        ("steps", steps, 1),
        ("batch_size", batch_size, 1),
        ("seed", seed, 0),
        ("n_images", n_images, 1),
        ("n_eval", n_eval, 10),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    config = config or WorldEncoderConfig()
    out = Path(out_dir)
    started = time.perf_counter()
    cpu_started = time.process_time()

    train_set = render_training_set(seed, n_images, config, progress)
    render_seconds = time.perf_counter() - started
    log.info("rendered %d training images in %.1f s", n_images, render_seconds)

    torch.manual_seed(seed)
    model = WorldEncoder(config).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "pos_embed" in n]
    optimiser = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    order = np.random.default_rng(seed).permutation
    warmup = max(1, steps // 20)
    history: list[dict[str, Any]] = []
    running: dict[str, float] = {}
    epoch, cursor, perm = 0, 0, order(n_images)
    for step in range(steps):
        if cursor + batch_size > n_images:
            epoch, cursor, perm = epoch + 1, 0, order(n_images)
        index = np.sort(perm[cursor : cursor + batch_size])
        cursor += batch_size
        for group in optimiser.param_groups:
            group["lr"] = warmup_cosine(step, steps, lr, warmup)  # cosine decay to zero
        loss, terms = multitask_loss(
            model, world_pixels(train_set.images[index], config.image_size), _targets(train_set, index)
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        for name, value in {"loss": float(loss.detach()), **terms}.items():
            running[name] = running.get(name, 0.0) + value
        if (step + 1) % 50 == 0 or step + 1 == steps:
            count = 50 if (step + 1) % 50 == 0 else (step + 1) % 50
            entry = {
                "phase": "train",
                "step": step + 1,
                "steps": steps,
                "epoch": epoch,
                **{k: round(v / count, 4) for k, v in running.items()},
            }
            history.append(entry)
            running = {}
            log.info("step %d/%d loss %.4f", step + 1, steps, entry["loss"])
            if progress is not None:
                progress(entry)
    train_seconds = time.perf_counter() - started - render_seconds

    eval_set = render_training_set(seed + 1, 2 * n_eval, config)
    metrics = evaluate(model.eval(), eval_set.subset(slice(0, n_eval)), eval_set.subset(slice(n_eval, None)))
    path = model.save_pretrained(out)
    report = {
        "settings": {
            "steps": steps,
            "batch_size": batch_size,
            "seed": seed,
            "n_images": n_images,
            "n_eval": n_eval,
            "lr": lr,
            "weight_decay": weight_decay,
            "threads": torch.get_num_threads(),
        },
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": (path / "model.safetensors").stat().st_size,
        "render_seconds": round(render_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "final_train": history[-1],
        "held_out": metrics,
    }
    write_text_atomic(out / "training.json", json.dumps({**report, "history": history}, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    """``python -m precompute.encoders.train_world_encoder --out DIR``: train and save, log to stderr.

    The ``blindspot world train-encoder`` command wraps ``train_world_encoder`` the same way.
    """
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for config.json + model.safetensors")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--n-images", type=int, default=DEFAULT_N_IMAGES)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = train_world_encoder(
        args.out, args.steps, args.batch_size, args.seed, n_images=args.n_images, lr=args.lr, threads=args.threads
    )
    held_out = report["held_out"]
    for name in ("probe_pooled_patches", "head_pooled", "head_cls"):
        log.info(
            "%s: mean AUROC %.4f, min %.4f (%s)",
            name,
            held_out[name]["mean_auroc"],
            held_out[name]["min_auroc"],
            held_out[name]["min_concept"],
        )
    log.info(
        "patch accuracy %s; %.0f s CPU, %.0f s wall",
        held_out["patch_accuracy"],
        report["cpu_seconds"],
        report["total_seconds"],
    )


if __name__ == "__main__":
    main()
