"""One-time import of the blindspots paper's RA-SAE-DINOv2-32k checkpoint.

The published checkpoint is a ``torch.save`` pickle of ``overcomplete`` module objects
(a ``BatchTopKSAE``/``TopKSAE`` whose ``dictionary`` is a
``RelaxedArchetypalDictionary``). Unpickling it runs code from that library, so it is
done once, here, behind the optional extra ``rasae``; the result is written in our
format (``config.json`` + ``model.safetensors``) and never unpickled again. A plain
state dict (tensors only) is read with ``weights_only=True`` and needs no library.

Attribute names this module relies on (``overcomplete`` ``sae/modules.py``,
``sae/archetypal_dictionary.py``, ``sae/batchtopk_sae.py``):

* ``module.encoder``: the library's ``MLPEncoder`` with empty ``mlp_blocks``,
  ``final_block = Sequential(Linear, norm)`` and ``final_activation`` (ReLU) -- the
  "linear" encoder has ``norm = Identity``; a ``BatchNorm1d`` is folded into the
  linear map; or the older default ``Sequential(Linear, BatchNorm1d, ReLU)``.
  State-dict keys ``encoder.final_block.0.{weight,bias}`` (or ``encoder.0.*``), and
  ``encoder.final_block.1.{weight,bias,running_mean,running_var}`` for a BatchNorm.
* ``module.dictionary``: ``RelaxedArchetypalDictionary`` with buffer ``C``, parameters
  ``W``, ``Relax`` and ``multiplier`` (a log-scale), attribute ``delta`` and, in eval
  mode, ``_fused_dictionary`` (read through ``get_dictionary()`` to verify the
  conversion); or a plain ``DictionaryLayer`` with ``_weights`` (l2-normalised by
  ``get_dictionary()``).
* ``module.top_k`` and ``module.running_threshold`` (``BatchTopKSAE``, a plain
  attribute: absent from state dicts).

The library has no decoder bias and computes ``codes = relu(pre) * (relu(pre) >= t)``
at inference; ours keeps ``pre > t`` (identical except on exact ties).
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from precompute.errors import ConfigError
from precompute.sae.base import SAE, SAEConfig
from precompute.sae.batchtopk import BatchTopKConfig, BatchTopKSAE
from precompute.sae.rasae import RASAE, RASAEConfig, clip_rows, row_stochastic
from precompute.sae.topk import TopKSAE

PAPER_THRESHOLD = 0.829
PAPER_TOP_K = 5
INSTALL_HINT = "pip install 'blindspot-atlas[rasae]'"


def import_rasae(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    threshold: float | None = PAPER_THRESHOLD,
    *,
    top_k: int | None = None,
    delta: float | None = None,
    fused: bool = False,
) -> SAE:
    """Convert the RA-SAE checkpoint at ``path`` and ``save_pretrained`` it to ``out_dir``.

    ``threshold``: the inference threshold (the paper's 0.829); ``None`` uses the
    checkpoint's ``running_threshold``, or per-token TopK when it has none. ``top_k``
    defaults to the checkpoint's (else the paper's 5), ``delta`` to the checkpoint's
    (else 1.0). ``fused=True`` writes a plain BatchTopK/TopK SAE holding the fused
    dictionary (smaller: no ``n_concepts x n_candidates`` W) instead of an RA-SAE.
    """
    loaded = _load(Path(path))
    if isinstance(loaded, nn.Module):
        sae = rasae_from_module(loaded, threshold, top_k=top_k, fused=fused)
    elif isinstance(loaded, Mapping):
        sae = rasae_from_state_dict(loaded, threshold, top_k=top_k, delta=delta, fused=fused)
    else:
        raise ConfigError(f"{path} holds a {type(loaded).__name__}, expected an SAE module or a state dict")
    sae.save_pretrained(out_dir)
    return sae


def _load(path: Path):
    if not path.is_file():
        raise ConfigError(f"RA-SAE checkpoint {path} does not exist")
    try:  # a tensors-only file loads safely, without the library
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    except Exception as err:
        raise ConfigError(f"{path} is not a readable torch checkpoint: {err}") from None
    try:
        importlib.import_module("overcomplete")
    except ImportError:
        raise ConfigError(
            f"{path} is a pickle of the 'overcomplete' library's SAE classes; reading it "
            f"once needs that library: {INSTALL_HINT}"
        ) from None
    return torch.load(path, map_location="cpu", weights_only=False)


def rasae_from_module(
    module: nn.Module, threshold: float | None = PAPER_THRESHOLD, *, top_k: int | None = None, fused: bool = False
) -> SAE:
    """Convert an already-unpickled ``overcomplete`` SAE module (see the module doc)."""
    for name in ("encoder", "dictionary"):
        if not hasattr(module, name):
            raise ConfigError(
                f"expected an overcomplete SAE with .encoder and .dictionary; "
                f"{type(module).__name__} has no .{name}"
            )
    module.eval()  # the library fuses its archetypal dictionary on eval()
    activation = getattr(module.encoder, "final_activation", None)
    if activation is not None and type(activation).__name__ != "ReLU":
        raise ConfigError(f"only a ReLU encoder activation converts; found {type(activation).__name__}")
    running = getattr(module, "running_threshold", None)
    if threshold is None and running is not None:
        threshold = float(running)
    dictionary = module.dictionary
    reference = dictionary.get_dictionary() if hasattr(dictionary, "get_dictionary") else None
    bn_eps = _batchnorm_eps(module.encoder)
    state = {k: v.detach() for k, v in module.state_dict().items()}
    return rasae_from_state_dict(
        state,
        threshold,
        top_k=top_k or getattr(module, "top_k", None),
        delta=getattr(dictionary, "delta", None),
        fused=fused,
        batchnorm_eps=bn_eps,
        reference_dictionary=None if reference is None else reference.detach(),
    )


def _batchnorm_eps(encoder: nn.Module) -> float:
    norms = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm1d)]
    return norms[0].eps if norms else 1e-5


def _encoder_weights(state: Mapping[str, Tensor], eps: float) -> tuple[Tensor, Tensor]:
    """The encoder as one linear map, a BatchNorm (eval statistics) folded in."""
    if any(key.startswith("encoder.mlp_blocks.") for key in state):
        raise ConfigError("the encoder has hidden MLP blocks; only a single linear encoder converts")
    prefix = next((p for p in ("encoder.final_block.", "encoder.") if f"{p}0.weight" in state), None)
    if prefix is None:
        raise ConfigError(
            "no encoder weights: expected 'encoder.final_block.0.weight' or 'encoder.0.weight', "
            f"found keys {sorted(state)[:12]}"
        )
    weight = state[f"{prefix}0.weight"].float()
    bias = state.get(f"{prefix}0.bias")
    bias = torch.zeros(weight.shape[0]) if bias is None else bias.float()
    norm_keys = {k[len(prefix) + 2 :] for k in state if k.startswith(f"{prefix}1.")}
    if not norm_keys:
        return weight, bias
    if "running_mean" not in norm_keys:
        raise ConfigError(
            f"the encoder normalises with a layer of parameters {sorted(norm_keys)} (LayerNorm?); "
            "only BatchNorm1d folds into a linear map"
        )
    scale = 1.0 / (state[f"{prefix}1.running_var"].float() + eps).sqrt()
    if f"{prefix}1.weight" in state:
        scale = scale * state[f"{prefix}1.weight"].float()
    shift = state[f"{prefix}1.bias"].float() if f"{prefix}1.bias" in state else torch.zeros_like(scale)
    return weight * scale[:, None], (bias - state[f"{prefix}1.running_mean"].float()) * scale + shift


def rasae_from_state_dict(
    state: Mapping[str, Tensor],
    threshold: float | None = PAPER_THRESHOLD,
    *,
    top_k: int | None = None,
    delta: float | None = None,
    fused: bool = False,
    batchnorm_eps: float = 1e-5,
    reference_dictionary: Tensor | None = None,
) -> SAE:
    """Convert an ``overcomplete`` SAE state dict (keys as in the module doc)."""
    if not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError("expected a state dict of tensors")
    enc_weight, enc_bias = _encoder_weights(state, batchnorm_eps)
    n_concepts, input_dim = enc_weight.shape
    k = int(top_k or PAPER_TOP_K)
    archetypal = all(f"dictionary.{name}" in state for name in ("C", "W", "Relax"))
    if archetypal:
        delta = float(1.0 if delta is None else delta)
        candidates = state["dictionary.C"].float()
        weights = row_stochastic(state["dictionary.W"].float())
        relax = clip_rows(state["dictionary.Relax"].float(), delta)
        multiplier = state.get("dictionary.multiplier", torch.zeros(())).float().reshape(())
        atoms = None if not fused else (weights @ candidates + relax) * multiplier.exp()
    elif "dictionary._weights" in state:
        raw = state["dictionary._weights"].float()
        atoms = raw / raw.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    else:
        raise ConfigError("no dictionary: expected dictionary.{C,W,Relax} (archetypal) or dictionary._weights")
    if reference_dictionary is not None and not archetypal:
        atoms = reference_dictionary.float()

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
        _verify(sae.dictionary, reference_dictionary.float())
    return sae


def _verify(ours: Tensor, reference: Tensor) -> None:
    """Fail loudly if our reading of the checkpoint's structure is wrong."""
    if ours.shape != reference.shape:
        raise ConfigError(
            f"converted dictionary has shape {tuple(ours.shape)}, the checkpoint's {tuple(reference.shape)}"
        )
    error = float((ours.detach() - reference).abs().max())
    tolerance = 1e-4 * max(1.0, float(reference.abs().max()))
    if error > tolerance:
        raise ConfigError(
            f"converted dictionary differs from the checkpoint's own by up to {error:.3g} "
            f"(tolerance {tolerance:.3g}); the checkpoint's structure is not the one this converter knows"
        )
