"""Load the generators of a run config: any diffusers text-to-image pipeline, or the world model.

DESIGN.md section 7: the code path is the one users run on GPUs,
``AutoPipelineForText2Image.from_pretrained(id_or_path, torch_dtype=...)`` (falling
back to ``DiffusionPipeline.from_pretrained`` for pipelines the auto classes do not
map), with the paper's settings (seed 001 appendix D.2: fp16, 512x512, per-model
steps and guidance; SD 1.5 + DPO swaps in another UNet). ``preflight_*`` checks
that every model, UNet and option can be had before the generate stage makes a
single image, so an unknown id or path fails at once with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from precompute.config import DiffusersGeneratorConfig, WorldModelGeneratorConfig
from precompute.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# diffusers 0.42 renamed from_pretrained's ``torch_dtype`` to ``dtype`` (the old name warns).
DTYPE_KEY = "dtype" if tuple(int(p) for p in version("diffusers").split(".")[:2]) >= (0, 42) else "torch_dtype"
WORLD_WEIGHTS = Path(__file__).resolve().parent.parent / "world" / "weights" / "world-model"
#: The pipeline classes (``model_index.json``'s ``_class_name``) that load, generate, capture and steer here,
#: each tested with a tiny random-weight model of its real components (tests/precompute/generators/test_families.py).
PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": "Stable Diffusion 1.x and 2.x: SD 1.5, SD 1.5 with a swapped (DPO) UNet, SD 2.1",
    "PixArtAlphaPipeline": "PixArt-alpha",
    "KandinskyPipeline": "Kandinsky 2.1, its decoder with prior = its KandinskyPriorPipeline",
    "StableDiffusionXLPipeline": "SDXL",
    "FluxPipeline": "FLUX.1",
}
#: Decoders generated through a separate prior: (the prior's pipeline class, the combined pipeline class).
PRIORS = {"KandinskyPipeline": ("KandinskyPriorPipeline", "KandinskyCombinedPipeline")}


@dataclass
class LoadedPipeline:
    """A pipeline ready to generate, and how it was set up (recorded in the manifest)."""

    pipeline: Any
    device: str
    dtype: str
    attention: str
    safety_checker: bool
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.dtype, "attention": self.attention,
                "safety_checker": self.safety_checker, "pipeline_class": type(self.pipeline).__name__}


def _is_local(reference: str) -> bool:
    return reference.startswith((".", "/", "~")) or Path(reference).expanduser().exists()


def _hub_file(repo_id: str, filename: str, what: str) -> Path:
    """A small file of a hub repo (from the local cache first); ConfigError with the reason if unavailable."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except (LocalEntryNotFoundError, EntryNotFoundError, OSError, ValueError):
        pass
    try:
        return Path(hf_hub_download(repo_id, filename, etag_timeout=10))
    except RepositoryNotFoundError:
        raise ConfigError(f"{what} {repo_id!r}: no such model on the Hugging Face hub (or it is gated/private)") from None
    except EntryNotFoundError:
        raise ConfigError(f"{what} {repo_id!r} has no {filename}; expected a diffusers model repository") from None
    except Exception as exc:  # network down, offline mode, bad id syntax: all mean 'cannot be had'
        raise ConfigError(f"{what} {repo_id!r} is neither a local folder nor in the local cache, and the hub "
                          f"cannot be reached ({type(exc).__name__}: {str(exc)[:200]})") from None


def pipeline_index(reference: str, what: str = "model") -> dict[str, Any]:
    """The ``model_index.json`` of a pipeline folder or hub id; ConfigError naming why it is unusable."""
    if _is_local(reference):
        folder = Path(reference).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"{what} {reference!r}: no such folder")
        path = folder / "model_index.json"
        if not path.is_file():
            raise ConfigError(f"{what} {reference!r} has no model_index.json; expected a diffusers pipeline folder "
                              "(save_pretrained output)")
    else:
        path = _hub_file(reference, "model_index.json", what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {reference!r}: model_index.json is not valid JSON ({exc})") from None


def unet_subfolder(reference: str) -> str | None:
    """``"unet"`` when the UNet lives in a ``unet/`` subfolder (a whole pipeline), None for a bare UNet."""
    if _is_local(reference):
        folder = Path(reference).expanduser()
        if (folder / "unet" / "config.json").is_file():
            return "unet"
        if (folder / "config.json").is_file():
            return None
        raise ConfigError(f"unet {reference!r}: neither {folder}/unet/config.json nor {folder}/config.json exists")
    try:
        _hub_file(reference, "unet/config.json", "unet")
        return "unet"
    except ConfigError:
        _hub_file(reference, "config.json", "unet")
        return None


def supported_families() -> str:
    """The supported pipeline classes and the models they stand for, for messages."""
    return "; ".join(f"{name} ({family})" for name, family in PIPELINE_FAMILIES.items())


def preflight_diffusers(config: DiffusersGeneratorConfig) -> dict[str, Any]:
    """Check that the model (and UNet, prior and options) can be loaded; return the pipeline's model index."""
    what = f"generator {config.name!r}"
    index = pipeline_index(config.model, f"{what}: model")
    pipeline_class = index.get("_class_name")
    if pipeline_class not in PIPELINE_FAMILIES:
        raise ConfigError(f"{what}: model {config.model!r} is a {pipeline_class}, which is not supported; supported "
                          f"pipelines: {supported_families()}")
    expected_prior = PRIORS.get(pipeline_class, (None, None))[0]
    if config.prior is not None:
        if expected_prior is None:
            raise ConfigError(f"{what}: prior is set, but a {pipeline_class} takes no separate prior (Kandinsky "
                              "2.1's decoder, a KandinskyPipeline, does)")
        prior_class = pipeline_index(config.prior, f"{what}: prior").get("_class_name")
        if prior_class != expected_prior:
            raise ConfigError(f"{what}: prior {config.prior!r} is a {prior_class}; expected a {expected_prior}")
    elif expected_prior is not None and _is_local(config.model):
        raise ConfigError(f"{what}: {config.model!r} is a {pipeline_class}, a decoder that needs its prior; set prior "
                          f"to the {expected_prior} (Kandinsky 2.1: kandinsky-community/kandinsky-2-1-prior, or its "
                          "local folder)")
    if config.unet is not None:
        unet_subfolder(config.unet)
        if "unet" not in index:
            raise ConfigError(f"generator {config.name!r}: unet swap asked, but {index.get('_class_name')} "
                              "has no unet component")
    if config.attention == "xformers" and importlib.util.find_spec("xformers") is None:
        raise ConfigError(f"generator {config.name!r}: attention = 'xformers' but xformers is not installed "
                          "(pip install xformers, or use attention = 'sdpa')")
    return index


def preflight_world_model(config: WorldModelGeneratorConfig) -> Path:
    """The world model's folder, checked; the shipped weights when ``path`` is unset."""
    folder = Path(config.path) if config.path is not None else WORLD_WEIGHTS
    if not (folder / "model_index.json").is_file():
        where = "the shipped world-model weights" if config.path is None else "path"
        raise ConfigError(f"generator {config.name!r}: {where} {folder} has no model_index.json; train the world "
                          "model first (python -m precompute.generators.train_world_model) or set path")
    return folder


def resolve_dtype(requested: str, device: str, notes: list[str]) -> tuple[str, torch.dtype]:
    """fp16/bf16 on accelerators; the CPU runs fp32 (half-precision convolutions there are slow or missing)."""
    if device.startswith("cpu") and requested != "fp32":
        notes.append(f"dtype {requested} requested; running fp32 on the CPU")
        return "fp32", torch.float32
    return requested, DTYPES[requested]


def _place(pipeline: Any, device: str, cpu_offload: bool, notes: list[str]) -> None:
    if cpu_offload and device.startswith("cuda"):
        gpu = torch.device(device).index or 0
        pipeline.enable_model_cpu_offload(gpu_id=gpu)
    else:
        if cpu_offload:
            notes.append("cpu_offload ignored: it only applies on CUDA")
        pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)  # the stage's own bar reports images/s


def load_diffusers(config: DiffusersGeneratorConfig, device: str) -> LoadedPipeline:
    """Load a diffusers text-to-image pipeline as ``config`` asks (dtype, UNet swap, safety checker, attention)."""
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline, UNet2DConditionModel

    index = preflight_diffusers(config)
    notes: list[str] = []
    dtype_name, dtype = resolve_dtype(config.dtype, device, notes)
    kwargs: dict[str, Any] = {DTYPE_KEY: dtype}
    has_checker = "safety_checker" in index and index["safety_checker"] not in (None, [None, None])
    if "safety_checker" in index and not config.safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if config.safety_checker and not has_checker:
        notes.append("safety_checker requested but the pipeline has none")
    if config.unet is not None:
        kwargs["unet"] = UNet2DConditionModel.from_pretrained(
            config.unet, subfolder=unet_subfolder(config.unet), **{DTYPE_KEY: dtype})
    if config.prior is not None:
        pipeline = _with_prior(config, index["_class_name"], kwargs, dtype)
    else:
        try:
            pipeline = AutoPipelineForText2Image.from_pretrained(config.model, **kwargs)
        except (ValueError, KeyError, AttributeError) as exc:  # a pipeline class the auto mapping does not know
            log.info("AutoPipelineForText2Image cannot load %s (%s); using DiffusionPipeline", config.model, exc)
            pipeline = DiffusionPipeline.from_pretrained(config.model, **kwargs)
    attention = "sdpa" if config.attention in ("default", "sdpa") else "xformers"
    if attention == "xformers":
        pipeline.enable_xformers_memory_efficient_attention()
    _place(pipeline, device, config.cpu_offload, notes)
    return LoadedPipeline(pipeline, device, dtype_name, attention, bool(config.safety_checker and has_checker), notes)


def _with_prior(config: DiffusersGeneratorConfig, decoder_class: str, kwargs: dict[str, Any], dtype: torch.dtype):
    """The decoder at ``config.model`` and the prior at ``config.prior`` as one text-to-image pipeline.

    Kandinsky 2.1 is published as two pipelines (the hub's model card links them, which
    ``AutoPipelineForText2Image`` follows for hub ids); diffusers' combined pipeline
    runs the prior's text -> image-embedding step, then the decoder, in one call.
    """
    import diffusers

    decoder = diffusers.DiffusionPipeline.from_pretrained(config.model, **kwargs)
    prior = diffusers.DiffusionPipeline.from_pretrained(config.prior, **{DTYPE_KEY: dtype})
    combined = getattr(diffusers, PRIORS[decoder_class][1])
    return combined(**decoder.components, **{f"prior_{name}": part for name, part in prior.components.items()})


def load_world_model(config: WorldModelGeneratorConfig, device: str) -> LoadedPipeline:
    """Load the trained world text-to-image model (``WorldPipeline``) from its folder."""
    from precompute.generators.world_model import WorldPipeline

    folder = preflight_world_model(config)
    notes: list[str] = []
    dtype_name, dtype = resolve_dtype(getattr(config, "dtype", "fp32"), device, notes)
    pipeline = WorldPipeline.from_pretrained(folder, **{DTYPE_KEY: dtype})
    _place(pipeline, device, False, notes)
    return LoadedPipeline(pipeline, device, dtype_name, "sdpa", False, notes)


def capture_config(points: tuple[str, ...], steps: tuple[int, ...], num_inference_steps: int, guidance: float,
                   pipeline: Any):
    """The capture settings of a generator (None without capture points); ``auto`` is the architecture's default."""
    from precompute.generators.capture import CaptureConfig, default_point

    if not points:
        return None
    resolved = tuple(default_point(pipeline) if p == "auto" else p for p in points)
    # guidance > 1 means the denoiser sees [uncond, cond] (diffusers' do_classifier_free_guidance); FLUX's
    # guidance is distilled into the model (an embedding, one conditional batch), so it never doubles the batch.
    distilled = type(pipeline).__name__.startswith("Flux")
    return CaptureConfig(points=resolved, steps=steps, num_inference_steps=num_inference_steps,
                         guided=guidance > 1.0 and not distilled)


def make_diffusers_generator(config: DiffusersGeneratorConfig, device: str):
    """A ready ``PipelineGenerator`` for a diffusers config, with the paper's call settings."""
    from precompute.generators.diffusers_generator import PipelineGenerator

    loaded = load_diffusers(config, device)
    call = {"num_inference_steps": config.steps, "guidance_scale": config.guidance,
            "width": config.width, "height": config.height}
    if config.negative_prompt is not None:
        call["negative_prompt"] = config.negative_prompt
    capture = capture_config(config.capture, config.capture_steps, config.steps, config.guidance, loaded.pipeline)
    return PipelineGenerator(loaded.pipeline, config.name, config.seed, call, config.batch_size, device=device,
                             capture=capture, capture_budget=config.capture_budget,
                             setup={**loaded.record(), "notes": loaded.notes})


def world_model_image_size(config: WorldModelGeneratorConfig) -> int:
    """The side of the images the world model generates, from its UNet's config (no weights loaded)."""
    unet = json.loads((preflight_world_model(config) / "unet" / "config.json").read_text())
    return int(unet["sample_size"] * round((unet["in_channels"] // 3) ** 0.5))


def make_world_model_generator(config: WorldModelGeneratorConfig, device: str, size: int):
    """A ready ``PipelineGenerator`` for the world model, its output resized (bicubic) to ``size`` if another."""
    from precompute.generators.diffusers_generator import PipelineGenerator

    loaded = load_world_model(config, device)
    call = {"num_inference_steps": config.steps, "guidance_scale": config.guidance}
    capture = capture_config(config.capture, config.capture_steps, config.steps, config.guidance, loaded.pipeline)
    return PipelineGenerator(loaded.pipeline, config.name, config.seed, call, config.batch_size, device=device,
                             resize=(size, size), capture=capture, capture_budget=config.capture_budget,
                             setup={**loaded.record(), "notes": loaded.notes})
