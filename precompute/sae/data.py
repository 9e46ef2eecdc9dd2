"""Token batches for SAE training, in an order fixed by a seed.

Three sources share one interface (``epoch(e)`` yields the batches of epoch ``e``;
``batches_per_epoch`` is known or ``None``), so the trainer can resume at any step by
recomputing the epoch's order and skipping the batches already done:

* ``TensorTokens``: an in-memory tensor ``(..., dim)``, reshuffled every epoch.
* ``ShardedTokens``: a safetensors file, or a folder of them, each holding a
  ``"tokens"`` tensor ``(n, dim)``. Each epoch visits the shards in a seeded order,
  shuffles rows within a shard and carries the remainder into the next shard, so only
  one shard is in memory at a time.
* ``IterableBatches``: any iterable of ``(batch, dim)`` tensors, used as given; it
  must yield the same batches each time it is iterated for a resume to be exact.

The last partial batch of an epoch is dropped, keeping BatchTopK's batch size fixed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from precompute.errors import ConfigError, DataError

TOKENS_KEY = "tokens"


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class TensorTokens:
    """An in-memory token tensor, shuffled per epoch."""

    def __init__(self, tokens: Tensor, batch_size: int, seed: int) -> None:
        if tokens.ndim < 2:
            raise ConfigError(f"tokens must have shape (n, dim), got shape {tuple(tokens.shape)}")
        self.tokens = tokens.reshape(-1, tokens.shape[-1])
        self.dim = self.tokens.shape[1]
        self.n_tokens = self.tokens.shape[0]
        if self.n_tokens == 0:
            raise DataError("no training tokens: the token tensor is empty")
        self.batch_size = min(batch_size, self.n_tokens)
        self.batches_per_epoch: int | None = self.n_tokens // self.batch_size
        self.seed = seed

    def epoch(self, epoch: int) -> Iterator[Tensor]:
        order = torch.randperm(self.n_tokens, generator=_epoch_generator(self.seed, epoch))
        order = order.to(self.tokens.device)
        for i in range(self.batches_per_epoch):
            yield self.tokens[order[i * self.batch_size : (i + 1) * self.batch_size]]

    def sample(self, n: int, seed: int) -> Tensor:
        pick = torch.randperm(self.n_tokens, generator=torch.Generator().manual_seed(seed))[:n]
        return self.tokens[pick.to(self.tokens.device)]


def token_shard_paths(path: str | os.PathLike) -> list[Path]:
    """The shard files behind ``path``: the file itself, or a folder's ``*.safetensors``."""
    root = Path(path)
    if root.is_file():
        return [root]
    if root.is_dir():
        shards = sorted(p for p in root.iterdir() if p.suffix == ".safetensors" and p.is_file())
        if not shards:
            raise DataError(f"no *.safetensors token shards in folder {root}")
        return shards
    raise ConfigError(f"tokens path {root} does not exist (expected a .safetensors file or a folder of them)")


def _shard_shape(path: Path) -> tuple[int, ...]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            if TOKENS_KEY not in handle.keys():
                raise DataError(
                    f"{path} has no {TOKENS_KEY!r} tensor (found {sorted(handle.keys())})"
                )
            return tuple(handle.get_slice(TOKENS_KEY).get_shape())
    except DataError:
        raise
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise DataError(f"{path} is not a readable safetensors file: {err}") from None


class ShardedTokens:
    """Token shards on disk, one shard in memory at a time."""

    def __init__(self, path: str | os.PathLike, batch_size: int, seed: int) -> None:
        self.paths = token_shard_paths(path)
        shapes = [_shard_shape(p) for p in self.paths]
        for p, shape in zip(self.paths, shapes):
            if len(shape) != 2:
                raise DataError(f"{p}: {TOKENS_KEY!r} must have shape (n, dim), got {shape}")
        dims = {shape[1] for shape in shapes}
        if len(dims) != 1:
            raise DataError(f"token shards under {path} disagree on the token dimension: {sorted(dims)}")
        self.dim = dims.pop()
        self.sizes = [shape[0] for shape in shapes]
        self.n_tokens = sum(self.sizes)
        if self.n_tokens == 0:
            raise DataError(f"no training tokens: every shard under {path} is empty")
        self.batch_size = min(batch_size, self.n_tokens)
        self.batches_per_epoch: int | None = self.n_tokens // self.batch_size
        self.seed = seed

    def _load(self, index: int) -> Tensor:
        return load_file(str(self.paths[index]))[TOKENS_KEY]

    def epoch(self, epoch: int) -> Iterator[Tensor]:
        generator = _epoch_generator(self.seed, epoch)
        carry = None
        for index in torch.randperm(len(self.paths), generator=generator).tolist():
            shard = self._load(index)
            shard = shard[torch.randperm(shard.shape[0], generator=generator)]
            if carry is not None:
                shard = torch.cat([carry, shard])
            n_full = shard.shape[0] // self.batch_size
            for i in range(n_full):
                yield shard[i * self.batch_size : (i + 1) * self.batch_size]
            carry = shard[n_full * self.batch_size :]

    def sample(self, n: int, seed: int) -> Tensor:
        """``n`` tokens drawn uniformly without replacement across shards (seeded)."""
        n = min(n, self.n_tokens)
        pick = torch.randperm(self.n_tokens, generator=torch.Generator().manual_seed(seed))[:n]
        pick, _ = pick.sort()
        starts = torch.tensor([0, *self.sizes]).cumsum(0)
        parts = []
        for index in range(len(self.paths)):  # one read per shard
            lo, hi = int(starts[index]), int(starts[index + 1])
            local = pick[(pick >= lo) & (pick < hi)] - lo
            if local.numel():
                parts.append(self._load(index)[local])
        return torch.cat(parts)


class IterableBatches:
    """A caller's iterable of batches, used in the order it yields them."""

    def __init__(self, batches: Iterable[Tensor]) -> None:
        self.batches = batches
        self.batches_per_epoch: int | None = len(batches) if hasattr(batches, "__len__") else None
        self.reiterable = iter(batches) is not batches

    def epoch(self, epoch: int) -> Iterator[Tensor]:
        if epoch > 0 and not self.reiterable:
            return iter(())
        return iter(self.batches)


def batch_source(tokens, batch_size: int, seed: int):
    """Wrap a tensor, a tokens path or an iterable of batches as a batch source."""
    if isinstance(tokens, (TensorTokens, ShardedTokens, IterableBatches)):
        return tokens
    if isinstance(tokens, Tensor):
        return TensorTokens(tokens, batch_size, seed)
    if isinstance(tokens, (str, os.PathLike)):
        return ShardedTokens(tokens, batch_size, seed)
    if isinstance(tokens, Iterable):
        return IterableBatches(tokens)
    raise ConfigError(
        f"tokens must be a tensor, a path to safetensors shards or an iterable of batches, "
        f"got {type(tokens).__name__}"
    )
