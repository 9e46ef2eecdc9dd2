"""The internal SAE: trained on captured positions, then read back as per-image and per-position codes.

RAIGen (seed 000, "Key Designs", MSAE): a Matryoshka BatchTopK SAE on the bottleneck
activations, every spatial position one sample, trained once; only the coarsest group
(``encode(x, prefix=1)``) is scored. Positions are encoded in chunks, so codes are never
held for all positions at once: one pass gives each feature's firing count, each
image's summed codes, the explained variance of the whole SAE and of the coarsest
group alone, and every feature's typical activation where it fires (``ActivationScale``:
the unit of add-mode steering strengths).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from precompute.config import InternalConfig
from precompute.errors import ConfigError
from precompute.sae import MatryoshkaConfig, MatryoshkaSAE, TrainConfig, load_sae, train_sae

POSITION_CHUNK = 65_536  # positions encoded at once
DEAD_AFTER_TOKENS = 10_000_000  # the trainer's default; capped at one pass over the positions
# Log-spaced bins of the per-feature histogram of firing activations: 10^-4 .. 10^4 in 800 bins is a 2.3%
# step, and the quantile interpolates inside its bin; values outside the range count in the edge bins.
SCALE_RANGE = (-4.0, 4.0)
SCALE_BINS = 800
SCALE_QUANTILE = 0.9  # the typical activation: the 90th percentile of a feature's code where it fires


def group_sizes(n_features: int, fractions: tuple[float, ...]) -> list[int]:
    """Matryoshka group sizes from fractions of ``n_features`` (each group at least one feature)."""
    if n_features < len(fractions):
        raise ConfigError(f"{n_features} features cannot form {len(fractions)} Matryoshka groups")
    ends = [min(n_features, max(i + 1, round(sum(fractions[:i + 1]) * n_features))) for i in range(len(fractions))]
    ends[-1] = n_features
    sizes = [b - a for a, b in zip([0, *ends[:-1]], ends)]
    if any(size < 1 for size in sizes):
        raise ConfigError(f"group_fractions {list(fractions)} leave an empty group among {n_features} features")
    return sizes


def train_internal_sae(positions: Tensor, table: InternalConfig, device: str, folder: Path,
                       progress) -> tuple[MatryoshkaSAE, dict]:
    """Train (or reuse, or resume) the internal SAE on ``positions`` (n, C); return it in eval mode and its report.

    Writes ``config.json`` + ``model.safetensors``, ``train_report.json`` and ``checkpoints/`` to
    ``folder``; a killed run resumes from its last checkpoint.
    """
    report_path = folder / "train_report.json"
    if (folder / "model.safetensors").is_file() and report_path.is_file():
        return load_sae(folder, device=device), json.loads(report_path.read_text())
    n_positions, channels = positions.shape
    n_features = table.expansion * channels
    if table.k > n_features:
        raise ConfigError(f"internal k ({table.k}) is larger than the SAE's {n_features} features")
    config = MatryoshkaConfig(input_dim=channels, n_concepts=n_features, k=table.k,
                              group_sizes=tuple(group_sizes(n_features, table.group_fractions)))
    batch = min(table.batch_size, n_positions)
    train = TrainConfig(batch_size=batch, epochs=table.epochs, lr=table.lr, aux_coef=table.aux_coefficient,
                        dead_after_tokens=max(1, min(DEAD_AFTER_TOKENS, n_positions)), seed=table.seed,
                        device=device, log_every=10)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(table.seed)
        sae = MatryoshkaSAE(config)
    total = max(1, math.ceil(table.epochs * (n_positions // batch)))
    with progress(total, f"train internal SAE ({n_features} features)", "step") as advance:
        report = train_sae(sae, positions, train, checkpoint_dir=folder / "checkpoints", resume=True,
                           progress=lambda metrics: advance(train.log_every)).to_dict()
    sae.save_pretrained(folder)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return sae.eval(), report


class ActivationHistogram:
    """Per feature, a log-spaced histogram of its codes where it fires, accumulated chunk by chunk.

    Exact quantiles would need every non-zero code (about k per position: 80 M values for
    10,000 images x 256 positions at k = 32); the histogram is (features x SCALE_BINS)
    counts whatever the number of positions, and its quantiles are within a bin's 2.3%.
    """

    def __init__(self, n_features: int):
        self.n_features = n_features
        self.counts = torch.zeros(n_features * SCALE_BINS, dtype=torch.long)

    def add(self, codes: Tensor) -> None:
        """Count the non-zero entries of ``codes`` (n, n_features)."""
        rows, features = codes.nonzero(as_tuple=True)
        low, high = SCALE_RANGE
        position = (codes[rows, features].double().log10() - low) / (high - low) * SCALE_BINS
        bins = position.floor().long().clamp_(0, SCALE_BINS - 1)
        self.counts += torch.bincount((features * SCALE_BINS + bins).cpu(), minlength=self.counts.numel())

    def quantile(self, q: float) -> Tensor:
        """(n_features,) the ``q`` quantile of each feature's firing codes (log-interpolated in its bin); NaN for a
        feature that never fired."""
        counts = self.counts.reshape(self.n_features, SCALE_BINS).double()
        total = counts.sum(dim=1)
        cumulative = counts.cumsum(dim=1)
        target = (q * total)[:, None]
        index = (cumulative < target).sum(dim=1).clamp_(max=SCALE_BINS - 1)  # the bin holding the quantile
        before = cumulative.gather(1, (index - 1).clamp_min(0)[:, None]).squeeze(1) * (index > 0)
        inside = counts.gather(1, index[:, None]).squeeze(1)
        fraction = ((q * total - before) / inside.clamp_min(1)).clamp(0.0, 1.0)
        low, high = SCALE_RANGE
        value = 10.0 ** (low + (index.double() + fraction) * (high - low) / SCALE_BINS)
        return torch.where(total > 0, value, torch.full_like(value, float("nan")))


@dataclass(frozen=True)
class ActivationScale:
    """Every feature of the SAE (not only the scored group): positions where it fires and its typical activation.

    ``typical`` is the SCALE_QUANTILE quantile of the feature's code over the positions
    where it fires (NaN when it never fires): a strength of 1 in add mode adds the
    feature's decoder atom at that activation (DESIGN.md section 2, control).
    """

    fired: Tensor  # (n_features,) positions where the feature is non-zero
    typical: Tensor  # (n_features,) float64


@dataclass(frozen=True)
class PooledCodes:
    """What one pass over the positions gives (``width`` = the coarsest group's features)."""

    fired: Tensor  # (width,) positions where each feature is non-zero
    image_sums: Tensor  # (images, width) codes summed over each image's positions
    image_positions: Tensor  # (images,) positions per image
    explained_variance: float  # of the whole SAE's reconstruction
    explained_variance_coarse: float  # of the coarsest group's reconstruction alone
    scale: ActivationScale  # of every feature of the SAE

    @property
    def image_means(self) -> Tensor:
        """(images, width) mean code per position: the images' pooled internal features."""
        return self.image_sums / self.image_positions.clamp_min(1)[:, None].to(self.image_sums.dtype)


@torch.no_grad()
def pool_codes(sae: MatryoshkaSAE, positions: Tensor, image_of_row: Tensor, n_images: int,
               advance=None, chunk: int = POSITION_CHUNK) -> PooledCodes:
    """Encode every position; count firings, sum codes per image, measure reconstruction, histogram activations."""
    width = sae.prefix_width(1)
    device = sae.W_enc.device
    histogram = ActivationHistogram(sae.n_concepts)
    fired = torch.zeros(width, dtype=torch.long)
    sums = torch.zeros(n_images, width, dtype=torch.float64)
    residual = torch.zeros(2, dtype=torch.float64)  # whole SAE, coarsest group
    total = torch.zeros(positions.shape[1], dtype=torch.float64)
    square = torch.zeros((), dtype=torch.float64)
    for start in range(0, positions.shape[0], chunk):
        x = positions[start:start + chunk].to(device=device, dtype=torch.float32)
        codes = sae.encode_codes(x)
        histogram.add(codes)
        coarse = codes[:, :width]
        full_hat = sae.decode(codes)
        coarse_hat = sae.decode(coarse)
        residual[0] += (x - full_hat).double().square().sum().cpu()
        residual[1] += (x - coarse_hat).double().square().sum().cpu()
        total += x.double().sum(dim=0).cpu()
        square += x.double().square().sum().cpu()
        coarse = coarse.double().cpu()
        fired += (coarse > 0).sum(dim=0)
        sums.index_add_(0, image_of_row[start:start + chunk], coarse)
        if advance is not None:
            advance(x.shape[0])
    n = positions.shape[0]
    variance = float(square - total.square().sum() / max(n, 1))
    counts = torch.bincount(image_of_row, minlength=n_images)
    explained = (1 - residual / variance).tolist() if variance > 0 else [float("nan")] * 2
    scale = ActivationScale(fired=histogram.counts.reshape(sae.n_concepts, SCALE_BINS).sum(dim=1),
                            typical=histogram.quantile(SCALE_QUANTILE))
    return PooledCodes(fired=fired, image_sums=sums, image_positions=counts, explained_variance=explained[0],
                       explained_variance_coarse=explained[1], scale=scale)


@torch.no_grad()
def feature_maps(sae: MatryoshkaSAE, positions: Tensor, first_row: Tensor, n_cells: int, images: Tensor,
                 features: Tensor) -> Tensor:
    """Spatial maps (pairs, n_cells) of feature ``features[i]`` on image ``images[i]``.

    An image's positions are the rows ``first_row[image] .. first_row[image] + n_cells`` of
    ``positions``, in grid order (the capture of a full grid). Pairs are encoded a
    chunk at a time (about POSITION_CHUNK x 64 codes): each pair's rows are gathered
    and only its feature is kept.
    """
    device = sae.W_enc.device
    width = sae.prefix_width(1)
    chunk = max(1, (POSITION_CHUNK * 64) // (n_cells * width))
    maps = torch.zeros(images.shape[0], n_cells)
    cells = torch.arange(n_cells)
    for start in range(0, images.shape[0], chunk):
        rows = first_row[images[start:start + chunk]][:, None] + cells[None, :]  # (b, cells)
        x = positions[rows.reshape(-1)].to(device=device, dtype=torch.float32)
        codes = sae.encode(x, prefix=1)[1].reshape(rows.shape[0], n_cells, width)
        picked = features[start:start + chunk].to(device)
        maps[start:start + chunk] = codes.gather(2, picked[:, None, None].expand(-1, n_cells, 1)).squeeze(2).cpu()
    return maps
