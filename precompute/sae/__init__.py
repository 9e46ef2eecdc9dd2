"""Sparse autoencoders: the concept encoders of the output and internal lenses.

Variants (one per module, each registered under its ``variant`` name so that
``load_sae`` / ``SAE.from_pretrained`` can rebuild any saved model):

* ``topk`` (``TopKSAE``): per-token top-k, Gao et al. 2024.
* ``batchtopk`` (``BatchTopKSAE``): batch-level top-k in training, a saved threshold
  at inference, Bussmann et al. 2024.
* ``rasae`` (``RASAE``): relaxed archetypal dictionary ``W C + Lambda``, Fel et al. 2025,
  the blindspots paper's model.
* ``matryoshka`` (``MatryoshkaSAE``): nested prefixes with one loss each, as in RAIGen.

Every model's ``forward(x)`` returns ``(pre_codes, codes, x_hat)``; models are stored
as ``config.json`` + ``model.safetensors``.
"""

from precompute.errors import ConfigError
from precompute.sae.base import SAE, SAEConfig, registered_variants
from precompute.sae.batchtopk import BatchTopKConfig, BatchTopKSAE
from precompute.sae.convert_rasae import import_rasae, rasae_from_module, rasae_from_state_dict
from precompute.sae.matryoshka import MatryoshkaConfig, MatryoshkaSAE
from precompute.sae.rasae import RASAE, RASAEConfig, kmeans_candidates
from precompute.sae.topk import TopKSAE
from precompute.sae.stage import train_sae_from_tokens_file
from precompute.sae.train import TrainConfig, TrainReport, train_sae


def load_sae(path, device="cpu") -> SAE:
    """Load any saved SAE (``config.json`` + ``model.safetensors``) in eval mode."""
    return SAE.from_pretrained(path, device=device)


def build_sae(variant: str, **config) -> SAE:
    """A freshly initialised SAE of ``variant`` from config keyword arguments."""
    klass = registered_variants().get(variant)
    if klass is None:
        raise ConfigError(f"unknown SAE variant {variant!r}; known variants: {sorted(registered_variants())}")
    return klass(klass.config_class.from_dict(config))


__all__ = [
    "SAE",
    "SAEConfig",
    "TopKSAE",
    "BatchTopKSAE",
    "BatchTopKConfig",
    "RASAE",
    "RASAEConfig",
    "MatryoshkaSAE",
    "MatryoshkaConfig",
    "TrainConfig",
    "TrainReport",
    "build_sae",
    "import_rasae",
    "kmeans_candidates",
    "load_sae",
    "rasae_from_module",
    "rasae_from_state_dict",
    "registered_variants",
    "train_sae",
    "train_sae_from_tokens_file",
]
