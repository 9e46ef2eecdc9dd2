"""One-time import of the blindspots paper's RA-SAE-DINOv2-32k checkpoint (and other ``overcomplete`` SAEs).

The paper's code keeps its SAE as ``torch.save(model)`` of whole ``overcomplete``
objects and reads it with ``torch.load(..., weights_only=False)`` then
``sae.module.encode`` (a ``BatchTopKSAE`` in ``nn.DataParallel`` whose ``dictionary``
is a ``RelaxedArchetypalDictionary``). Unpickling such a file normally imports the
library and runs whatever code the pickle names. Here it is read with torch's
weights-only unpickler instead: torch's own module classes that an overcomplete SAE is
built from are allowed, every ``overcomplete.*`` class is mapped onto a structure-only
stand-in (``PickledModule``: the object's parameters, buffers, sub-modules and
attributes, no behaviour), and anything else in the pickle stops the import with its
name. So the conversion needs neither ``overcomplete`` nor its dependencies (nor trust
in the file), and the result is written in our format (``config.json`` +
``model.safetensors``). A plain state dict (tensors only) converts too.

What is read (``overcomplete`` 0.1-0.3, ``sae/modules.py``, ``sae/dictionary.py``,
``sae/archetypal_dictionary.py``, ``sae/topk_sae.py``, ``sae/batchtopk_sae.py``,
``sae/rasae.py``):

* the sparsity rule, from the class: ``TopKSAE`` and ``RATopKSAE`` keep the ``top_k``
  largest codes of each token (``top_k`` is per token; no threshold ever applies, so
  L0 stays k); ``BatchTopKSAE`` keeps the ``top_k`` largest codes of a whole training
  batch (``top_k`` counts codes per *batch*, so it says nothing about a token) and
  thresholds at inference: ``codes = relu(pre) * (relu(pre) >= running_threshold)``.
  Its threshold is the checkpoint's own ``running_threshold`` unless one is given (the
  paper's code assigns 0.829 to the ``DataParallel`` wrapper, which leaves
  ``sae.module.running_threshold``, the one ``sae.module.encode`` uses, as saved); its
  per-token k, kept for further training, is ``top_k`` when given, else the paper's 5.
* ``encoder``: an ``MLPEncoder`` with no hidden blocks, ``final_block = Sequential(Linear,
  norm)`` and a ReLU ``final_activation`` (the ``"linear"`` encoder has ``norm =
  Identity``; a ``BatchNorm1d`` is folded into the linear map), or the older
  ``Sequential(Linear, BatchNorm1d, ReLU)``.
* ``dictionary``: ``RelaxedArchetypalDictionary`` (buffer ``C``, parameters ``W``,
  ``Relax``, ``multiplier``, attribute ``delta``) or ``DictionaryLayer`` (``_weights``,
  ``multiplier``, ``normalization``). In eval mode both hold ``_fused_dictionary``,
  the matrix the library decodes with: the conversion is checked against it.

The library has no decoder bias; ours keeps ``pre > t`` where the library keeps
``relu(pre) >= t`` (identical except on exact ties).
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from precompute.errors import ConfigError
from precompute.sae.base import SAE, SAEConfig
from precompute.sae.batchtopk import BatchTopKConfig, BatchTopKSAE
from precompute.sae.rasae import RASAE, RASAEConfig, clip_rows, row_stochastic
from precompute.sae.topk import TopKSAE

log = logging.getLogger(__name__)

PAPER_THRESHOLD = 0.829
PAPER_TOP_K = 5

#: What the converter reads, for messages about what it found instead.
EXPECTED = ("an overcomplete TopKSAE, RATopKSAE or BatchTopKSAE with a linear encoder (optionally wrapped in "
            "nn.DataParallel) saved with torch.save, or the state dict of one")
#: overcomplete's SAE classes and the sparsity rule each converts to.
SPARSITY_OF = {"TopKSAE": "topk", "RATopKSAE": "topk", "BatchTopKSAE": "batchtopk"}
#: Import paths of the classes an overcomplete SAE pickle names (stable from 0.1 to 0.3); any other
#: ``overcomplete.*`` class found in a pickle gets a stand-in as well.
OVERCOMPLETE_CLASSES = (
    "overcomplete.sae.base.SAE",
    "overcomplete.sae.topk_sae.TopKSAE",
    "overcomplete.sae.batchtopk_sae.BatchTopKSAE",
    "overcomplete.sae.rasae.RATopKSAE",
    "overcomplete.sae.rasae.RAJumpSAE",
    "overcomplete.sae.jump_sae.JumpSAE",
    "overcomplete.sae.qsae.QSAE",
    "overcomplete.sae.mp_sae.MpSAE",
    "overcomplete.sae.omp_sae.OMPSAE",
    "overcomplete.sae.dictionary.DictionaryLayer",
    "overcomplete.sae.archetypal_dictionary.RelaxedArchetypalDictionary",
    "overcomplete.sae.modules.MLPEncoder",
    "overcomplete.sae.modules.IdentityEncoder",
    "overcomplete.sae.modules.AttentionEncoder",
    "overcomplete.sae.modules.AttentionBlock",
    "overcomplete.sae.modules.ResNetEncoder",
    "overcomplete.sae.modules.ResNetBlock",
    "overcomplete.sae.modules.TieableEncoder",
)
#: torch classes an overcomplete SAE with a linear (or MLP) encoder is built from.
TORCH_CLASSES = (nn.Linear, nn.Sequential, nn.ModuleList, nn.BatchNorm1d, nn.LayerNorm, nn.Identity, nn.ReLU,
                 nn.DataParallel)
_UNSUPPORTED = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)")
_MAX_STANDINS = 64


class PickledModule(nn.Module):
    """Structure-only stand-in for a pickled ``overcomplete`` module: its tensors, sub-modules and attributes.

    ``pickled_as`` (on each generated subclass) is the import path the pickle named.
    """

    pickled_as = ""


@functools.cache
def standin(path: str) -> type[PickledModule]:
    """The stand-in class for the overcomplete class at import ``path``."""
    return type(path.rpartition(".")[2], (PickledModule,), {"__module__": __name__, "pickled_as": path})


# overcomplete's DictionaryLayer keeps its normalisation as a function attribute; a pickle names it by path.
def normalize_l2(x: Tensor) -> Tensor:
    return x / (x.norm(p=2, dim=1, keepdim=True) + 1e-8)


def normalize_max_l2(x: Tensor) -> Tensor:
    return x / x.norm(p=2, dim=1, keepdim=True).amax(dim=0, keepdim=True)  # by the longest atom


def normalize_l1(x: Tensor) -> Tensor:
    return x / (x.norm(p=1, dim=1, keepdim=True) + 1e-8)


def normalize_max_l1(x: Tensor) -> Tensor:
    return x / x.norm(p=1, dim=1, keepdim=True).amax(dim=0, keepdim=True)


def normalize_identity(x: Tensor) -> Tensor:
    return x


NORMALIZATIONS = {f"overcomplete.sae.dictionary.{f.__name__}": f
                  for f in (normalize_l2, normalize_max_l2, normalize_l1, normalize_max_l1, normalize_identity)}


def class_path(obj: object) -> str:
    """The import path of ``obj``'s class, as its pickle names it (a stand-in reports the original)."""
    kind = type(obj)
    return getattr(kind, "pickled_as", "") or f"{kind.__module__}.{kind.__qualname__}"


def import_rasae(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    threshold: float | None = None,
    *,
    top_k: int | None = None,
    delta: float | None = None,
    fused: bool = False,
) -> SAE:
    """Convert the overcomplete SAE checkpoint at ``path`` and ``save_pretrained`` it to ``out_dir``.

    ``threshold``: the BatchTopK inference threshold; None uses the checkpoint's own
    (a state dict has none: None converts it as per-token TopK). ``top_k``: the
    per-token k (default: a TopK checkpoint's own ``top_k``; for BatchTopK and state
    dicts the paper's 5). ``delta`` defaults to the checkpoint's (else 1.0).
    ``fused=True`` writes a plain BatchTopK/TopK SAE holding the fused dictionary
    (smaller: no ``n_concepts x n_candidates`` W) instead of an RA-SAE.
    """
    path = Path(path)
    loaded = load_checkpoint(path)
    if isinstance(loaded, nn.Module):
        sae = rasae_from_module(loaded, threshold, top_k=top_k, fused=fused, source=str(path))
    elif isinstance(loaded, Mapping):
        sae = rasae_from_state_dict(loaded, threshold, top_k=top_k, delta=delta, fused=fused, source=str(path))
    else:
        raise ConfigError(f"{path} holds a {class_path(loaded)}; expected {EXPECTED}")
    sae.save_pretrained(out_dir)
    return sae


def load_checkpoint(path: Path):
    """Unpickle ``path`` with torch's weights-only unpickler, overcomplete's classes as stand-ins (module doc)."""
    if not path.is_file():
        raise ConfigError(f"RA-SAE checkpoint {path} does not exist")
    with open(path, "rb") as handle:
        head = handle.read(2)
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # torch.save's zip format, or a legacy pickle
        raise ConfigError(f"{path} is not a torch checkpoint (neither torch.save's zip format nor a pickle); "
                          f"expected {EXPECTED}")
    allowed: list = [*TORCH_CLASSES, *((standin(p), p) for p in OVERCOMPLETE_CLASSES),
                     *((f, p) for p, f in NORMALIZATIONS.items())]
    for _ in range(_MAX_STANDINS):
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            found = _UNSUPPORTED.search(str(err))
            if found is None:
                raise ConfigError(f"{path} is not a readable torch checkpoint ({_first_line(err)}); "
                                  f"expected {EXPECTED}") from None
            name = found.group(1)
            if not name.startswith("overcomplete."):
                raise ConfigError(f"{path} is a pickle that needs {name}, which is not part of an overcomplete SAE "
                                  f"this converter reads; expected {EXPECTED}") from None
            allowed.append((standin(name), name))
        except Exception as err:  # not a zip/pickle at all, a truncated file, ...: all mean 'cannot be read'
            raise ConfigError(f"{path} is not a readable torch checkpoint ({type(err).__name__}: "
                              f"{_first_line(err)}); expected {EXPECTED}") from None
    raise ConfigError(f"{path} names more than {_MAX_STANDINS} overcomplete classes; expected {EXPECTED}")


def _first_line(err: BaseException) -> str:
    """The informative line of an unpickling error (torch wraps it in advice about ``weights_only``)."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.strip().startswith(boilerplate)]
    return lines[0][:300] if lines else type(err).__name__


def _unwrap(module: nn.Module) -> nn.Module:
    """The SAE inside ``nn.DataParallel`` (how the paper's code holds it), checked to be an overcomplete SAE."""
    wrapped = isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel))
    inner = module.module if wrapped else module
    name = class_path(inner)
    found = f"{type(module).__name__} of {name}" if wrapped else name
    if not name.startswith("overcomplete."):
        raise ConfigError(f"found {found}; expected {EXPECTED}")
    if name.rpartition(".")[2] not in SPARSITY_OF:
        raise ConfigError(f"found {found}, which does not convert; expected {EXPECTED}")
    for part in ("encoder", "dictionary"):
        if not isinstance(getattr(inner, part, None), nn.Module):
            raise ConfigError(f"found {found} without its .{part}; expected {EXPECTED}")
    return inner


def rasae_from_module(
    module: nn.Module,
    threshold: float | None = None,
    *,
    top_k: int | None = None,
    fused: bool = False,
    source: str = "the checkpoint",
) -> SAE:
    """Convert an unpickled overcomplete SAE (a stand-in, or the library's own object; see the module doc)."""
    sae = _unwrap(module)
    name = class_path(sae).rpartition(".")[2]
    encoder_name = class_path(sae.encoder).rpartition(".")[2]
    if encoder_name not in ("MLPEncoder", "Sequential"):
        raise ConfigError(f"{source}: the encoder is a {encoder_name}; only overcomplete's linear MLPEncoder "
                          "(no hidden blocks) converts")
    activation = getattr(sae.encoder, "final_activation", None)
    if activation is not None and type(activation).__name__ != "ReLU":
        raise ConfigError(f"{source}: only a ReLU encoder activation converts; found {type(activation).__name__}")
    if SPARSITY_OF[name] == "topk":
        if threshold is not None:
            raise ConfigError(f"{source} is a {name}: it keeps the top_k largest codes of each token, with no "
                              "threshold; a threshold applies to BatchTopKSAE checkpoints only")
        k = top_k or int(sae.top_k)
    else:
        k = top_k or PAPER_TOP_K
        if threshold is None:
            running = getattr(sae, "running_threshold", None)
            if running is None:
                raise ConfigError(f"{source} is a BatchTopKSAE that has no running_threshold (it was never trained); "
                                  f"give the inference threshold (the paper's RA-SAE-DINOv2-32k: {PAPER_THRESHOLD})")
            threshold = float(running)
    if sae.training:
        log.warning("%s was saved in training mode, where overcomplete's %s.encode keeps the batch's top codes; "
                    "converted with its inference rule (eval mode)", source, name)
    dictionary = sae.dictionary
    reference = getattr(dictionary, "_fused_dictionary", None)
    reference = reference.detach() if isinstance(reference, Tensor) and not sae.training else None
    normalization = getattr(dictionary, "normalization", None)
    return rasae_from_state_dict(
        {k_: v.detach() for k_, v in sae.state_dict().items()},
        threshold,
        top_k=k,
        delta=getattr(dictionary, "delta", None),
        fused=fused,
        batchnorm_eps=_batchnorm_eps(sae.encoder),
        reference_dictionary=reference,
        normalization=normalization if callable(normalization) else None,
        source=source,
    )


def _batchnorm_eps(encoder: nn.Module) -> float:
    norms = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm1d)]
    return norms[0].eps if norms else 1e-5


def _encoder_weights(state: Mapping[str, Tensor], eps: float, source: str) -> tuple[Tensor, Tensor]:
    """The encoder as one linear map, a BatchNorm (eval statistics) folded in."""
    if any(key.startswith("encoder.mlp_blocks.") for key in state):
        raise ConfigError(f"{source}: the encoder has hidden MLP blocks; only a single linear encoder converts")
    prefix = next((p for p in ("encoder.final_block.", "encoder.") if f"{p}0.weight" in state), None)
    if prefix is None:
        raise ConfigError(
            f"{source}: no encoder weights ('encoder.final_block.0.weight' or 'encoder.0.weight'), found keys "
            f"{sorted(state)[:12]}; expected {EXPECTED}"
        )
    weight = state[f"{prefix}0.weight"].float()
    bias = state.get(f"{prefix}0.bias")
    bias = torch.zeros(weight.shape[0]) if bias is None else bias.float()
    norm_keys = {k[len(prefix) + 2 :] for k in state if k.startswith(f"{prefix}1.")}
    if not norm_keys:
        return weight, bias
    if "running_mean" not in norm_keys:
        raise ConfigError(
            f"{source}: the encoder normalises with a layer of parameters {sorted(norm_keys)} (LayerNorm?); "
            "only BatchNorm1d folds into a linear map"
        )
    scale = 1.0 / (state[f"{prefix}1.running_var"].float() + eps).sqrt()
    if f"{prefix}1.weight" in state:
        scale = scale * state[f"{prefix}1.weight"].float()
    shift = state[f"{prefix}1.bias"].float() if f"{prefix}1.bias" in state else torch.zeros_like(scale)
    return weight * scale[:, None], (bias - state[f"{prefix}1.running_mean"].float()) * scale + shift


def rasae_from_state_dict(
    state: Mapping[str, Tensor],
    threshold: float | None = None,
    *,
    top_k: int | None = None,
    delta: float | None = None,
    fused: bool = False,
    batchnorm_eps: float = 1e-5,
    reference_dictionary: Tensor | None = None,
    normalization=None,
    source: str = "the checkpoint",
) -> SAE:
    """Convert an overcomplete SAE state dict (keys as in the module doc).

    ``threshold`` set: BatchTopK with that inference threshold; None: per-token TopK.
    ``top_k``: the per-token k (default the paper's 5).
    """
    if not all(isinstance(v, Tensor) for v in state.values()):
        kinds = sorted({type(v).__name__ for v in state.values() if not isinstance(v, Tensor)})
        raise ConfigError(f"{source} holds a mapping with {', '.join(kinds)} values; expected {EXPECTED}")
    enc_weight, enc_bias = _encoder_weights(state, batchnorm_eps, source)
    n_concepts, input_dim = enc_weight.shape
    k = int(top_k or PAPER_TOP_K)
    if not 1 <= k <= n_concepts:
        raise ConfigError(f"{source}: the per-token k must be in [1, {n_concepts}], got {k} (overcomplete's "
                          "BatchTopKSAE top_k counts codes per batch, not per token: give the per-token k)")
    multiplier = state.get("dictionary.multiplier", torch.zeros(())).float().reshape(())
    archetypal = all(f"dictionary.{name}" in state for name in ("C", "W", "Relax"))
    if archetypal:
        delta = float(1.0 if delta is None else delta)
        candidates = state["dictionary.C"].float()
        weights = row_stochastic(state["dictionary.W"].float())
        relax = clip_rows(state["dictionary.Relax"].float(), delta)
        atoms = None if not fused else (weights @ candidates + relax) * multiplier.exp()
    elif "dictionary._weights" in state:
        if reference_dictionary is not None:
            atoms = reference_dictionary.float()
        else:
            atoms = (normalization or normalize_l2)(state["dictionary._weights"].float()) * multiplier.exp()
    else:
        raise ConfigError(f"{source}: no dictionary (dictionary.C, .W and .Relax, or dictionary._weights), found keys "
                          f"{sorted(state)[:12]}; expected {EXPECTED}")

    with torch.no_grad():
        if archetypal and not fused:
            config = RASAEConfig(
                input_dim=input_dim, n_concepts=n_concepts, k=k, n_candidates=candidates.shape[0],
                delta=delta, sparsity="batchtopk" if threshold is not None else "topk",
            )
            sae = RASAE(config, candidates=candidates)
            sae.W.copy_(weights)
            sae.Lambda.copy_(relax)
            sae.multiplier.copy_(multiplier)
        else:
            klass, config_class = (BatchTopKSAE, BatchTopKConfig) if threshold is not None else (TopKSAE, SAEConfig)
            config = config_class(
                input_dim=input_dim, n_concepts=n_concepts, k=k, unit_norm_decoder=False, decoder_bias=False
            )
            sae = klass(config)
            sae.W_dec.copy_(atoms)
        sae.W_enc.copy_(enc_weight)
        sae.b_enc.copy_(enc_bias)
        if threshold is not None:
            sae.set_threshold(threshold)
    sae.eval()
    if reference_dictionary is not None:
        _verify(sae.dictionary, reference_dictionary.float(), source)
    return sae


def sparsity_rule(sae: SAE) -> str:
    """How a converted SAE picks its codes, in words: its inference threshold, or its per-token k."""
    if isinstance(sae, BatchTopKSAE) and getattr(sae.config, "sparsity", "batchtopk") == "batchtopk":
        return f"inference threshold {float(sae.threshold):.4g} (k {sae.config.k} for training)"
    return f"top-{sae.config.k} per token"


def _verify(ours: Tensor, reference: Tensor, source: str) -> None:
    """Fail loudly if our reading of the checkpoint's structure is wrong."""
    if ours.shape != reference.shape:
        raise ConfigError(
            f"{source}: converted dictionary has shape {tuple(ours.shape)}, the checkpoint's {tuple(reference.shape)}"
        )
    error = float((ours.detach() - reference).abs().max())
    tolerance = 1e-4 * max(1.0, float(reference.abs().max()))
    if error > tolerance:
        raise ConfigError(
            f"{source}: converted dictionary differs from the checkpoint's own by up to {error:.3g} "
            f"(tolerance {tolerance:.3g}); the checkpoint's structure is not the one this converter knows"
        )
