"""Run configs: TOML files validated on load, before any work starts.

A config names one real-image source, any number of generators, and the settings of
the later stages. Every table is a frozen pydantic model with ``extra="forbid"``, so
an unknown key, a wrong type or a missing file is an error that names the key and
what was expected. Defaults are the blindspots paper's (seed 001, appendix D):
10,000 pairs; SD 1.5 / 2.1 at 50 steps and guidance 7.5; Kandinsky 2.1 at 100 steps
and guidance 4.0; PixArt at 50 and 7.5; all 512x512; delta temperature 0.8;
suppressed below 0.1, exaggerated above 0.9.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from precompute.errors import ConfigError

# Per-family generation defaults (seed 001 appendix D.2 for the paper's four models;
# diffusers' own defaults for SDXL and FLUX.1-schnell). Matched by substring of the
# lower-cased model id or path, first match wins.
MODEL_DEFAULTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("kandinsky-2-1", {"steps": 100, "guidance": 4.0, "width": 512, "height": 512}),
    ("pixart", {"steps": 50, "guidance": 7.5, "width": 512, "height": 512}),
    ("stable-diffusion-xl", {"steps": 50, "guidance": 5.0, "width": 1024, "height": 1024}),
    ("sdxl", {"steps": 50, "guidance": 5.0, "width": 1024, "height": 1024}),
    ("flux.1-schnell", {"steps": 4, "guidance": 0.0, "width": 1024, "height": 1024}),
    ("stable-diffusion-2-1", {"steps": 50, "guidance": 7.5, "width": 512, "height": 512}),
    ("stable-diffusion-v1-5", {"steps": 50, "guidance": 7.5, "width": 512, "height": 512}),
)
FALLBACK_DEFAULTS: dict[str, Any] = {"steps": 50, "guidance": 7.5, "width": 512, "height": 512}


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSettings(_Table):
    """The ``[run]`` table: what the run is called and how many pairs it samples."""

    name: str = "run"
    seed: int = 0
    n_items: int = Field(10_000, gt=0, description="image-caption pairs sampled (paper: 10,000)")
    max_image_side: int = Field(512, ge=16, description="longest side of the atlas's copy of a real image; the "
                                "energy model reads the original pixels, kept beside a downscaled copy")


class WorldSourceConfig(_Table):
    """The embedded world as the real-image source."""

    kind: Literal["world"]
    seed: int = 0
    size: int = Field(64, ge=16, le=1024)
    noise: float = Field(0.02, ge=0.0, le=1.0, description="share of stated attributes replaced by a wrong value")


class FolderSourceConfig(_Table):
    """A local folder with ``captions.jsonl`` or ``captions.csv``."""

    kind: Literal["folder"]
    path: Path


class UrlSourceConfig(_Table):
    """A CSV or Parquet file of ``url,caption`` rows, downloaded into a cache."""

    kind: Literal["urls"]
    path: Path
    url_column: str = "url"
    caption_column: str = "caption"
    id_column: str | None = None
    cache_dir: Path | None = None
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(3, ge=0)
    max_bytes: int = Field(20_000_000, gt=0)
    workers: int = Field(16, ge=1, le=256)


class HFSourceConfig(_Table):
    """A Hugging Face ``datasets`` dataset (hub id or local path); needs the ``datasets`` extra."""

    kind: Literal["hf"]
    dataset: str
    split: str = "train"
    config_name: str | None = None
    image_column: str = "image"
    caption_column: str = "text"
    url_column: str | None = None
    streaming: bool = False


SourceConfig = Annotated[
    WorldSourceConfig | FolderSourceConfig | UrlSourceConfig | HFSourceConfig,
    Field(discriminator="kind"),
]


class PlantedEffectConfig(_Table):
    """One planted effect of a planted world generator."""

    effect: Literal["suppress", "add"]
    concept: str
    rate: float = Field(ge=0.0, le=1.0)
    replace_with: str | None = None

    @model_validator(mode="after")
    def _known_concepts(self) -> PlantedEffectConfig:
        from precompute.world import PlantedEffect

        try:  # the world's own rules: known concept names, a replacement of the same family
            PlantedEffect(self.effect, self.concept, self.rate, self.replace_with)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


class _GeneratorBase(_Table):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="stable id of the generator")
    seed: int = 0
    control: bool = Field(False, description="a null control: the generator is known to draw what the data does, "
                                             "so every flag it gets is a false alarm (counted as a null flag)")
    n_items: int | None = Field(None, gt=0, description="draw only the first N sampled items (default: all): "
                                                        "its statistics pair those N real images with its own")


class PlantedGeneratorConfig(_GeneratorBase):
    """The planted world generator: reads the caption, applies the planted effects."""

    kind: Literal["planted"]
    size: int | None = Field(None, ge=16, le=1024, description="defaults to the world source's size")
    effects: tuple[PlantedEffectConfig, ...] = ()

    @field_validator("effects")
    @classmethod
    def _control_has_no_effects(cls, effects: tuple, info: ValidationInfo) -> tuple:
        if effects and info.data.get("control"):
            raise ValueError(f"a control generator (control = true) must have no planted effects; it has "
                             f"{len(effects)}: remove them or set control = false")
        return effects


class WorldModelGeneratorConfig(_GeneratorBase):
    """The project's trained tiny world text-to-image model (a diffusers pipeline folder)."""

    kind: Literal["world-model"]
    path: Path | None = Field(None, description="pipeline folder; default: the weights shipped with the package")
    steps: int = Field(25, ge=1, le=1000)
    guidance: float = Field(3.0, ge=0.0)
    batch_size: int = Field(64, ge=1)
    device: str = Field("auto", description="'auto' (CUDA when available, one GPU per process), 'cpu', 'cuda:1'")
    capture: tuple[str, ...] = Field((), description="hook points by dotted module path, e.g. unet.mid_block")
    capture_steps: tuple[int, ...] = Field((-1,), description="denoising steps to capture; -1 is the last")
    capture_budget: int | None = Field(256, ge=1, description="positions kept per image and hook point; None: all")


class DiffusersGeneratorConfig(_GeneratorBase):
    """Any diffusers text-to-image pipeline by hub id or local path.

    Unset ``steps``, ``guidance``, ``width`` and ``height`` take the per-model
    defaults of ``MODEL_DEFAULTS`` (the paper's settings for its four models).
    """

    kind: Literal["diffusers"]
    model: str
    unet: str | None = Field(None, description="swap in another UNet, e.g. the SD 1.5 DPO UNet")
    prior: str | None = Field(None, description="prior pipeline (Kandinsky 2.1); default: the model's own")
    steps: int | None = Field(None, ge=1, le=1000)
    guidance: float | None = Field(None, ge=0.0)
    width: int | None = Field(None, ge=64, le=4096, multiple_of=8)
    height: int | None = Field(None, ge=64, le=4096, multiple_of=8)
    dtype: Literal["fp16", "bf16", "fp32"] = "fp16"
    batch_size: int = Field(8, ge=1)
    attention: Literal["default", "sdpa", "xformers"] = "default"
    cpu_offload: bool = False
    safety_checker: bool = False
    negative_prompt: str | None = None
    capture: tuple[str, ...] = Field((), description="hook points by dotted module path")
    capture_steps: tuple[int, ...] = Field((-1,), description="denoising steps to capture; -1 is the last")
    capture_budget: int | None = Field(256, ge=1, description="positions kept per image and hook point; None: all")
    device: str = Field("auto", description="'auto' (CUDA when available, one GPU per process), 'cpu', 'cuda:1'")

    @model_validator(mode="after")
    def _fill_model_defaults(self) -> DiffusersGeneratorConfig:
        defaults = model_defaults(self.model)
        for key, value in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        return self


GeneratorConfig = Annotated[
    PlantedGeneratorConfig | WorldModelGeneratorConfig | DiffusersGeneratorConfig,
    Field(discriminator="kind"),
]


class EncodeConfig(_Table):
    """The output lens: energy model and SAE (the train and encode stages).

    Defaults follow seed 001 appendix F.1: DINOv2-with-registers tokens, a Relaxed
    Archetypal SAE of 32,000 concepts with top-k 5, AdamW with warm-up and cosine decay.
    """

    energy_model: str = Field("facebook/dinov2-with-registers-base",
                              description="hub id, local path, 'world' or 'world-heads' (the world encoder's heads)")
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["fp16", "bf16", "fp32"] = "fp32"
    batch_size: int = Field(64, ge=1)
    sae: Path | None = Field(None, description="SAE folder (config.json + safetensors), or 'world' / 'world-heads' "
                                               "for the world encoder's shipped SAEs; trained when unset")
    sae_variant: Literal["rasae", "topk", "batchtopk", "matryoshka"] = "rasae"
    n_concepts: int = Field(32_000, gt=0)
    k: int = Field(5, gt=0)
    train_tokens: int = Field(2_000_000, gt=0, description="real-image tokens sampled to train the SAE")
    train_epochs: float = Field(10.0, gt=0)
    train_batch_size: int = Field(4096, ge=1)
    lr: float = Field(5e-4, gt=0)
    sae_seed: int = Field(0, ge=0, description="seed of the SAE's initialisation and shuffling")
    patch_tokens_only: bool = Field(False, description="energy = sum over patch tokens only (default: all tokens)")
    energy_aggregation: Literal["sum", "max"] = Field(
        "sum", description="a concept's energy in an image: the sum of its codes over the tokens (the paper's) or "
        "their maximum (whether the image shows it, not how much of the image it covers)")
    exemplars: int = Field(8, ge=1, le=64, description="top images kept per concept and side")
    jpeg_roundtrip: bool = Field(False, description="encode real and generated images after a JPEG round trip, as "
                                 "the paper's code reads them from .jpg files")
    jpeg_quality: int = Field(75, ge=1, le=95, description="JPEG quality of the round trip (PIL's default)")


class AnalysisConfig(_Table):
    """Thresholds of the blindspot analysis (seed 001, section 4 and appendix D.3) and the test added to them.

    ``temperature``: the paper's T (0.8, set for DINOv2 energies), another positive
    number for another energy scale, or ``"auto"`` (``precompute.analysis.calibration``:
    T = ``auto_share`` x Q10 of the live concepts' mean real energy over ln 9). ``fdr``: a concept is flagged only
    when delta crosses a threshold and its paired test's Benjamini-Hochberg q-value is
    at most this. ``min_change``: an effect-size floor the paper lacks (0, the default,
    keeps the paper's rule): a flag also needs the mean energy to move by at least this
    share of its real value, ``|E_gen - E_real| >= min_change * E_real``; with
    ``baseline_quantile`` set, of its real value above the concept's baseline (that quantile
    of its energy over the real images), ``|E_gen - E_real| >= min_change * (E_real - B)``
    (``precompute.analysis.delta``).
    """

    temperature: float | Literal["auto"] = Field(0.8, description="delta's T: a number > 0, or 'auto'")
    suppressed_below: float = Field(0.1, gt=0.0, lt=1.0)
    exaggerated_above: float = Field(0.9, gt=0.0, lt=1.0)
    fdr: float = Field(0.05, gt=0.0, lt=1.0, description="false discovery rate of the flags (Benjamini-Hochberg)")
    min_change: float = Field(0.0, ge=0.0, le=10.0, description="a flag also needs |E_gen - E_real| >= min_change "
                              "* E_real (0: the paper's rule, no effect-size floor)")
    baseline_quantile: float | None = Field(
        None, ge=0.0, lt=1.0, description="measure min_change against E_real - B, B this quantile of the concept's "
        "energy over the real images, zeros included (unset: against E_real)")
    auto_share: float = Field(1.0, gt=0.0, le=1.0, description="temperature 'auto': the share of its energy the "
                              "10th-percentile concept must lose for delta to cross the thresholds (1: vanish)")
    pvalue_rule: Literal["hoeffding", "normal"] = Field(
        "hoeffding", description="paired sign-flip p-values: Hoeffding's exact bound or the normal approximation")
    bootstrap: int = Field(1000, ge=0)

    @field_validator("temperature", mode="before")
    @classmethod
    def _temperature(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value != "auto":
                raise ValueError("temperature must be a number > 0 or 'auto'")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
            raise ValueError("temperature must be a number > 0 or 'auto'")
        return float(value)

    @model_validator(mode="after")
    def _ordered(self) -> AnalysisConfig:
        if self.suppressed_below >= self.exaggerated_above:
            raise ValueError(
                f"suppressed_below ({self.suppressed_below}) must be below exaggerated_above ({self.exaggerated_above})"
            )
        return self


class LabelsConfig(_Table):
    """Optional VLM concept labels (seed 001 appendix F.2); off unless ``vlm_endpoint`` is set."""

    vlm_endpoint: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1")
    vlm_model: str = "gpt-4o"
    vlm_api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    vlm_max_concepts: int = Field(200, ge=1, description="concepts labelled, flagged blindspots first")
    vlm_timeout_s: float = Field(30.0, gt=0)


class ProbeConfig(_Table):
    """The attribution probes of the internal lens (DiffLens, seed 002, "Gradient-Based Bias Feature Localization").

    One logistic probe per output-lens concept, from an image's mean-pooled internal
    codes to the concept's presence (energy > 0) in that image.
    """

    min_positives: int = Field(10, ge=2, description="concepts with fewer positive (or negative) images are skipped")
    holdout: float = Field(0.25, gt=0.0, lt=1.0, description="share of images held out to measure the probe's AUROC")
    l2: float = Field(1e-3, ge=0.0, description="L2 penalty on the probe weights (standardised inputs)")
    steps: int = Field(100, ge=1, le=10_000, description="L-BFGS iterations of the joint fit")
    top: int = Field(10, ge=1, le=1000, description="internal features kept per concept, most attributed first")


class InternalConfig(_Table):
    """One ``[[internal]]`` table: the internal lens of one generator (RAIGen, seed 000).

    A Matryoshka BatchTopK SAE on the activations the generator captured at ``point``
    (every spatial position one sample), minority scores of its coarsest group, and
    DiffLens-style attribution of output-lens concepts to those features. Defaults:
    seed 000 ("Loss & Training"; the issue's RAIGen settings) for the SAE. Seed 000 gives
    neither the group sizes nor tau in numbers: the first group is 1/16 of the
    features (as wide as the hooked activation at expansion 16, and the output lens's
    Matryoshka split), and tau = 0.05 (see ``precompute.internal.minority``).
    """

    generator: str = Field(description="name of a generator of this config that captures `point`")
    point: str | None = Field(None, description="hook point; default: the generator's first capture point")
    step: int = Field(-1, description="captured denoising step; -1 is the last")
    expansion: int = Field(16, ge=1, le=256, description="SAE features per activation channel")
    k: int = Field(32, ge=1, description="active features per position (BatchTopK: the batch average)")
    group_fractions: tuple[float, ...] = Field((0.0625, 0.9375), description="Matryoshka group sizes as fractions")
    aux_coefficient: float = Field(1 / 32, ge=0.0)
    lr: float = Field(3e-4, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(4096, ge=1)
    nms_tau: float = Field(0.05, ge=0.0, le=2.0, description="features closer than this (centroid cosine distance) "
                                                             "to a better-scoring kept feature are dropped")
    semantic_model: str = Field("world", description="'world' (the world encoder), or a CLIP hub id or folder")
    exemplars: int = Field(8, ge=1, le=64, description="top generated images kept per feature")
    probe: ProbeConfig = ProbeConfig()
    seed: int = Field(0, ge=0)

    @field_validator("group_fractions")
    @classmethod
    def _fractions(cls, fractions: tuple[float, ...]) -> tuple[float, ...]:
        if not fractions or any(not 0 < f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(f"group_fractions must be fractions in (0, 1] summing to 1, got {list(fractions)}")
        return fractions


class RunConfig(_Table):
    """A whole run config (one TOML file)."""

    run: RunSettings = RunSettings()
    source: SourceConfig
    generators: tuple[GeneratorConfig, ...] = ()
    encode: EncodeConfig = EncodeConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    labels: LabelsConfig = LabelsConfig()
    internal: tuple[InternalConfig, ...] = ()

    @field_validator("generators")
    @classmethod
    def _unique_names(cls, generators: tuple) -> tuple:
        names = [g.name for g in generators]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"generator names must be unique; repeated: {', '.join(duplicates)}")
        if "real" in names:
            raise ValueError("'real' is reserved for the real images; give the generator another name")
        return generators

    def digest(self) -> str:
        """A short hash of the config's content: stage outputs are keyed by it."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def model_defaults(model: str) -> dict[str, Any]:
    """Generation defaults for a model id or path (the paper's per-model settings)."""
    lowered = model.lower()
    for needle, defaults in MODEL_DEFAULTS:
        if needle in lowered:
            return dict(defaults)
    return dict(FALLBACK_DEFAULTS)


def _format_location(loc: tuple) -> str:
    parts: list[str] = []
    for piece in loc:
        if isinstance(piece, int):
            parts[-1:] = [f"{parts[-1]}[{piece}]" if parts else f"[{piece}]"]
        elif piece in {"world", "folder", "urls", "hf", "planted", "world-model", "diffusers"} and parts:
            continue  # the discriminator tag pydantic puts in the path; the kind is named in the message
        else:
            parts.append(str(piece))
    return ".".join(parts) or "(top level)"


def _describe(error: dict) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing required key"
    value = error.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return f"{message} (got {shown})"


def _resolve_paths(config: RunConfig, base: Path, origin: str = "config") -> RunConfig:
    """Make relative paths relative to the config file and check that they exist (a folder where one is meant)."""
    problems: list[str] = []

    def check(where: str, path: Path | None, must_exist: bool = True, folder: bool = True) -> Path | None:
        if path is None:
            return None
        resolved = path if path.is_absolute() else (base / path)
        if must_exist and not resolved.exists():
            problems.append(f"{where}: {'folder' if folder else 'file'} not found: {resolved}")
        elif must_exist and folder and not resolved.is_dir():
            problems.append(f"{where}: expected a folder, found a file: {resolved}")
        return resolved

    updates: dict[str, Any] = {}
    source = config.source
    if isinstance(source, (FolderSourceConfig, UrlSourceConfig)):
        changes = {"path": check("source.path", source.path, folder=isinstance(source, FolderSourceConfig))}
        if isinstance(source, UrlSourceConfig) and source.cache_dir is not None:
            changes["cache_dir"] = check("source.cache_dir", source.cache_dir, must_exist=False)
        updates["source"] = source.model_copy(update=changes)
    generators = []
    for i, generator in enumerate(config.generators):
        if isinstance(generator, WorldModelGeneratorConfig) and generator.path is not None:
            generator = generator.model_copy(update={"path": check(f"generators[{i}].path", generator.path)})
        elif isinstance(generator, DiffusersGeneratorConfig):
            for key in ("model", "unet", "prior"):
                value = getattr(generator, key)
                # A value that looks like a path (starts with . or / or ~) must exist; hub ids are checked
                # when the generate stage loads them, before any image is made.
                if value and value.startswith((".", "/", "~")):
                    local = check(f"generators[{i}].{key}", Path(value).expanduser())
                    generator = generator.model_copy(update={key: str(local)})
        generators.append(generator)
    updates["generators"] = tuple(generators)
    if config.encode.sae is not None:
        sae = config.encode.sae
        shipped = {"world": "SHIPPED_SAE", "world-heads": "SHIPPED_HEADS_SAE"}  # precompute/encoders/weights/
        if str(sae) in shipped:  # an SAE shipped with the world encoder, for the energy model of the same name
            from precompute.encoders import world_encoder

            if config.encode.energy_model != str(sae):
                problems.append(f"encode.sae: {str(sae)!r} is the SAE of the world encoder's {str(sae)!r} tokens; "
                                f"energy_model is {config.encode.energy_model!r}")
            sae = getattr(world_encoder, shipped[str(sae)])
        updates["encode"] = config.encode.model_copy(update={"sae": check("encode.sae", sae)})
    if problems:
        raise ConfigError(f"invalid config {origin}:\n  " + "\n  ".join(problems))
    return config.model_copy(update=updates)


def parse_config(data: dict, base: Path | None = None, origin: str = "config") -> RunConfig:
    """Validate a config given as a dict; relative paths are resolved against ``base``."""
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{_format_location(e['loc'])}: {_describe(e)}" for e in exc.errors()]
        raise ConfigError(f"invalid config {origin}:\n  " + "\n  ".join(lines)) from None
    return _check_internal(_resolve_paths(config, base or Path.cwd(), origin), origin)


def _check_internal(config: RunConfig, origin: str) -> RunConfig:
    """Tie each ``[[internal]]`` table to a generator that captures its point and step; fill the default point."""
    problems: list[str] = []
    tables = []
    by_name = {g.name: g for g in config.generators}
    for i, table in enumerate(config.internal):
        generator = by_name.get(table.generator)
        captures = getattr(generator, "capture", ())
        if generator is None:
            problems.append(f"internal[{i}].generator: {table.generator!r} is not a generator of this config "
                            f"(generators: {', '.join(by_name) or 'none'})")
        elif not captures:
            problems.append(f"internal[{i}].generator: {table.generator!r} captures no activations; give it "
                            "capture = [\"unet.mid_block\"] (or another hook point)")
        else:
            point = table.point or captures[0]
            steps = generator.steps
            wanted = {s % steps for s in generator.capture_steps if -steps <= s < steps}
            if point not in captures:
                problems.append(f"internal[{i}].point: {point!r} is not captured by {table.generator!r} "
                                f"(capture: {list(captures)})")
            elif not -steps <= table.step < steps or table.step % steps not in wanted:
                problems.append(f"internal[{i}].step: step {table.step} is not captured by {table.generator!r} "
                                f"(capture_steps: {list(generator.capture_steps)} of {steps} steps)")
            table = table.model_copy(update={"point": point})
        tables.append(table)
    names = [t.generator for t in config.internal]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"internal: one table per generator; repeated: {', '.join(repeated)}")
    if problems:
        raise ConfigError(f"invalid config {origin}:\n  " + "\n  ".join(problems))
    return config.model_copy(update={"internal": tuple(tables)})


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run config; raise ``ConfigError`` naming every bad key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(data, base=path.resolve().parent, origin=str(path))
