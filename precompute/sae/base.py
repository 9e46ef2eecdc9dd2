"""The contract every SAE variant follows, and its storage format.

Design follows the ``overcomplete`` library (``sae/base.py``): one base class holds the
encoder (one linear map), the decoder (dictionary atoms + bias) and the I/O; a variant
overrides only its sparsity rule (``_sparsify``) or its dictionary. Every variant's
``forward`` returns ``(pre_codes, codes, x_hat)``.

Unlike the library, models are stored as ``config.json`` + ``model.safetensors`` and
loaded through a registry keyed by the ``variant`` field, never by unpickling.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from precompute.errors import ConfigError, DataError
from precompute.fileio import atomic_path, write_text_atomic
from precompute.sae.losses import mse_loss

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1

_VARIANTS: dict[str, type[SAE]] = {}


def registered_variants() -> dict[str, type[SAE]]:
    """The variant name -> class table used by ``SAE.from_pretrained``."""
    return dict(_VARIANTS)


def check_int(name: str, value: Any, minimum: int) -> None:
    """Raise ``ConfigError`` unless ``value`` is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")


def check_float(name: str, value: Any, minimum: float, *, inclusive: bool = True) -> None:
    """Raise ``ConfigError`` unless ``value`` is a finite number >= (or >) ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be finite, got {value}")
    if value < minimum or (not inclusive and value == minimum):
        relation = ">=" if inclusive else ">"
        raise ConfigError(f"{name} must be {relation} {minimum}, got {value}")


@dataclass(frozen=True)
class SAEConfig:
    """Shape and sparsity of an SAE; validated on construction, saved in ``config.json``.

    ``k`` is the number of active concepts per token (per-sample TopK, or the batch
    average for BatchTopK). ``unit_norm_decoder`` keeps the atoms on the unit sphere
    (Gao et al. 2024) so that code magnitudes are comparable across concepts.
    ``decoder_bias`` adds a learned bias to the reconstruction and subtracts it before
    encoding (the "pre-encoder bias" of Gao et al.).
    """

    input_dim: int
    n_concepts: int
    k: int = 32
    unit_norm_decoder: bool = True
    decoder_bias: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_int("input_dim", self.input_dim, 1)
        check_int("n_concepts", self.n_concepts, 1)
        check_int("k", self.k, 1)
        if self.k > self.n_concepts:
            raise ConfigError(f"k must be <= n_concepts ({self.n_concepts}), got k={self.k}")
        for name in ("unit_norm_decoder", "decoder_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SAEConfig:
        """Build from a dict, naming any unknown or missing key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown SAE config key(s) {unknown} for {cls.__name__}; "
                f"expected some of {sorted(known)}"
            )
        try:
            return cls(**values)
        except TypeError as err:  # a missing required field
            raise ConfigError(f"incomplete SAE config for {cls.__name__}: {err}") from None


def _block_size(width: int, k: int) -> int | None:
    """A divisor of ``width`` near ``sqrt(width / k)`` for the blocked top-k, if any."""
    target = (width / k) ** 0.5
    divisors = [b for b in range(16, 1025) if width % b == 0 and width // b >= 2 * k]
    return min(divisors, key=lambda b: abs(b - target)) if divisors else None


def row_topk(pre_codes: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Values and indices of the ``k`` largest entries of each row of a 2-D tensor.

    On CPU without autograd, uses an exact blocked search: split each row into
    blocks, keep the ``k`` blocks with the largest maxima (they must hold the top
    ``k`` entries), then search only those. One cheap ``amax`` pass replaces most of
    ``torch.topk``'s work on wide rows (32k concepts). Ties may pick other indices.
    """
    n, width = pre_codes.shape
    block = _block_size(width, k)
    if block is None or pre_codes.device.type != "cpu" or pre_codes.requires_grad:
        return pre_codes.topk(k, dim=-1, sorted=False)
    blocks = pre_codes.contiguous().view(n, width // block, block)
    top_blocks = blocks.amax(dim=-1).topk(k, dim=-1, sorted=False).indices
    candidates = blocks.gather(1, top_blocks.unsqueeze(-1).expand(n, k, block)).reshape(n, k * block)
    values, local = candidates.topk(k, dim=-1, sorted=False)
    return values, top_blocks.gather(1, local // block) * block + local % block


def topk_codes(pre_codes: Tensor, k: int, *, inplace: bool = False) -> Tensor:
    """Keep the ``k`` largest pre-activations of each row, ReLU'd; zeros elsewhere.

    ``inplace`` overwrites ``pre_codes`` (inference only: saves a second buffer).
    """
    values, indices = row_topk(pre_codes, k)
    out = pre_codes.zero_() if inplace else torch.zeros_like(pre_codes)
    return out.scatter_(-1, indices, values.relu())


def threshold_codes(pre_codes: Tensor, threshold: float, *, inplace: bool = False) -> Tensor:
    """``pre * (pre > threshold)`` in one pass (``threshold >= 0`` implies the ReLU)."""
    return F.threshold(pre_codes, threshold, 0.0, inplace=inplace)


class SAE(nn.Module):
    """Base sparse autoencoder: ``codes = sparsify(W_enc (x - b_dec) + b_enc)``,
    ``x_hat = codes @ dictionary + b_dec``.

    Subclasses set ``variant`` (registers them for ``from_pretrained``), ``config_class``
    and override ``_sparsify``; variants with a structured dictionary also override
    ``_build_dictionary``, ``reset_parameters``, ``dictionary`` and ``constrain_``.
    Inputs may have any leading shape ``(..., input_dim)``; they are flattened to
    tokens, and codes come back with the same leading shape.
    """

    variant: ClassVar[str] = ""
    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    #: the reconstruction loss the trainer uses for this variant (see ``losses.py``)
    reconstruction_loss: ClassVar = staticmethod(mse_loss)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("variant")
        if name:
            _VARIANTS[name] = cls

    def __init__(self, config: SAEConfig, **dictionary_init: Any) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        d, n = config.input_dim, config.n_concepts
        self.W_enc = nn.Parameter(torch.empty(n, d))
        self.b_enc = nn.Parameter(torch.zeros(n))
        if config.decoder_bias:
            self.b_dec = nn.Parameter(torch.zeros(d))
        else:  # kept as a zero buffer so every variant has the same state keys
            self.register_buffer("b_dec", torch.zeros(d))
        self._build_dictionary(**dictionary_init)
        self.reset_parameters()

    # -- structure (overridden by structured dictionaries) ---------------------------

    def _build_dictionary(self) -> None:
        self.W_dec = nn.Parameter(torch.empty(self.config.n_concepts, self.config.input_dim))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random unit atoms; encoder initialised as the decoder's transpose (Gao et al.)."""
        self.W_dec.normal_()
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        self.W_enc.copy_(self.W_dec)
        self.b_enc.zero_()
        self.b_dec.zero_()

    @property
    def dictionary(self) -> Tensor:
        """The decoder atoms as used, ``(n_concepts, input_dim)``."""
        return self.W_dec

    @torch.no_grad()
    def constrain_(self) -> None:
        """Re-impose the variant's constraints; the trainer calls it after each step."""
        if self.config.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    def _sparsify(self, pre_codes: Tensor, inplace: bool = False) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define its sparsity rule")

    # -- the contract ----------------------------------------------------------------

    @property
    def input_dim(self) -> int:
        return self.config.input_dim

    @property
    def n_concepts(self) -> int:
        return self.config.n_concepts

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(pre_codes, codes)``, each of shape ``(..., n_concepts)``.

        ``pre_codes`` are the encoder's linear outputs (before ReLU and sparsity);
        ``codes`` are the sparse non-negative concept activations.
        """
        flat = self._flatten_input(x)
        pre_codes = self._pre_codes(flat)
        codes = self._sparsify(pre_codes)
        shape = (*x.shape[:-1], pre_codes.shape[-1])
        return pre_codes.reshape(shape), codes.reshape(shape)

    @torch.no_grad()
    def encode_codes(self, x: Tensor) -> Tensor:
        """Inference fast path: the codes only, sparsified in place in the
        pre-activation buffer, so one ``(tokens, n_concepts)`` tensor is allocated
        instead of two. Equal to ``encode(x)[1]`` in eval mode."""
        flat = self._flatten_input(x)
        codes = self._sparsify(self._pre_codes(flat), inplace=not self.training)
        return codes.reshape(*x.shape[:-1], codes.shape[-1])

    def decode(self, codes: Tensor, dictionary: Tensor | None = None) -> Tensor:
        """Reconstruct ``(..., input_dim)`` from codes.

        Codes narrower than ``n_concepts`` decode with the first atoms only (a
        Matryoshka prefix). ``dictionary`` lets a caller that already computed the
        atoms this step (the trainer) skip recomputing a structured dictionary.
        """
        atoms = self.dictionary if dictionary is None else dictionary
        width = codes.shape[-1]
        if width > atoms.shape[0]:
            raise ConfigError(
                f"codes have {width} concepts but the SAE has {atoms.shape[0]} atoms"
            )
        flat = codes.reshape(-1, width)
        x_hat = torch.addmm(self.b_dec.to(flat.dtype), flat, atoms[:width].to(flat.dtype))
        return x_hat.reshape(*codes.shape[:-1], atoms.shape[1])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(pre_codes, codes, x_hat)``."""
        pre_codes, codes = self.encode(x)
        return pre_codes, codes, self.decode(codes)

    def _pre_codes(self, flat: Tensor, width: int | None = None) -> Tensor:
        """One matmul: ``(x - b_dec) W^T + b_enc`` with the bias folded (first ``width``)."""
        weight = self.W_enc if width is None else self.W_enc[:width]
        bias = self.b_enc if width is None else self.b_enc[:width]
        if self.config.decoder_bias:
            bias = bias - weight @ self.b_dec
        return torch.addmm(bias.to(flat.dtype), flat, weight.t().to(flat.dtype))

    def _flatten_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise ConfigError(f"SAE input must be a torch.Tensor, got {type(x).__name__}")
        d = self.config.input_dim
        if x.ndim == 0 or x.shape[-1] != d:
            got = x.shape[-1] if x.ndim else "none (a scalar)"
            raise ConfigError(
                f"{self.variant or 'SAE'} expects tokens of dimension input_dim={d} in the "
                f"last axis, got dimension {got} (input shape {tuple(x.shape)}); "
                "was this SAE trained on another encoder's tokens?"
            )
        if not x.is_floating_point():
            raise DataError(f"SAE input must be floating point, got dtype {x.dtype}")
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise DataError(
                f"SAE input has {bad} NaN or infinite value(s) among {x.numel()}; "
                "expected finite tokens (check the encoder's output)"
            )
        flat = x.reshape(-1, d)
        weight_dtype = self.W_enc.dtype
        if flat.dtype != weight_dtype and not torch.is_autocast_enabled(flat.device.type):
            flat = flat.to(weight_dtype)
        return flat

    def extra_repr(self) -> str:
        c = self.config
        return f"variant={self.variant!r}, input_dim={c.input_dim}, n_concepts={c.n_concepts}, k={c.k}"

    # -- storage -----------------------------------------------------------------------

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """Write ``config.json`` (with ``variant``) and ``model.safetensors`` to ``out_dir``.

        Each file is written to a temporary name and renamed, so a killed run never
        leaves a half-written model behind.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {
            name: tensor.detach().to("cpu").contiguous().clone()
            for name, tensor in self.state_dict().items()
        }
        meta = {"variant": self.variant, "format_version": str(FORMAT_VERSION)}
        with atomic_path(out / WEIGHTS_FILE) as temp:
            save_file(state, str(temp), metadata=meta)
        document = {"variant": self.variant, "format_version": FORMAT_VERSION, **self.config.to_dict()}
        write_text_atomic(out / CONFIG_FILE, json.dumps(document, indent=2) + "\n")
        return out

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> SAE:
        """Load a model written by ``save_pretrained``, dispatching on its ``variant``.

        Called on a subclass, the stored variant must be that subclass (or a child).
        The model comes back in eval mode (inference thresholds and fused dictionaries
        active). Only safetensors are read: nothing is unpickled.
        """
        folder = Path(path)
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not config_path.is_file() or not weights_path.is_file():
            raise ConfigError(
                f"no SAE at {folder}: expected {CONFIG_FILE} and {WEIGHTS_FILE} "
                "(as written by save_pretrained)"
            )
        try:
            document = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{config_path} is not valid JSON: {err}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{config_path} must hold a JSON object, got {type(document).__name__}")
        variant = document.pop("variant", None)
        version = document.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"{config_path} has format_version {version}; this code reads {FORMAT_VERSION}"
            )
        klass = _VARIANTS.get(variant)
        if klass is None:
            raise ConfigError(
                f"{config_path} names variant {variant!r}; known variants: {sorted(_VARIANTS)}"
            )
        if not issubclass(klass, cls):
            raise ConfigError(f"{folder} holds a {variant!r} SAE, not a {cls.variant or cls.__name__!r}")
        model = klass(klass.config_class.from_dict(document))
        state = load_file(str(weights_path))
        expected = set(model.state_dict())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ConfigError(
                f"{weights_path} does not match its {variant!r} config: "
                f"missing {missing}, unexpected {extra}"
            )
        for name, tensor in model.state_dict().items():
            if state[name].shape != tensor.shape:
                raise ConfigError(
                    f"{weights_path}: {name} has shape {tuple(state[name].shape)}, "
                    f"config implies {tuple(tensor.shape)}"
                )
        model.load_state_dict(state)
        return model.to(device).eval()
