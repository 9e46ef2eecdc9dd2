"""Train any SAE variant: AdamW, warm-up + cosine schedule, AuxK, checkpoints, exact resume.

Defaults follow the blindspots paper's RA-SAE recipe (seed 001, appendix F.1): AdamW
(beta1 0.9, beta2 0.999, weight decay 1e-5), linear warm-up over the first 5% of steps,
cosine decay from 5e-4 to 1e-6. The dead-latent term is Gao et al.'s AuxK (coefficient
1/32) rather than the paper's unspecified "auxiliary term (lambda = 1e-5)".

Everything a step depends on (weights, optimizer moments, dead-latent counters,
BatchTopK threshold, data order from ``seed``, learning rate as a pure function of the
step) is in the checkpoint, so a killed run resumed from its checkpoint ends with the
same weights as an uninterrupted one. Mixed precision (autocast bf16/fp16) is used on
CUDA only; CPU runs are fp32.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from precompute.errors import ConfigError
from precompute.sae.base import SAE, check_float, check_int
from precompute.sae.checkpoint import clear_checkpoints, latest_checkpoint, save_checkpoint
from precompute.sae.data import batch_source
from precompute.sae.losses import auxk_loss
from precompute.schedules import warmup_cosine

AMP_MODES = ("auto", "bf16", "fp16", "off")
#: config fields that may change between a checkpoint and its resume
_RESUME_FREE = {"log_every", "checkpoint_every"}

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings, validated on construction and saved with checkpoints.

    Give ``steps`` or ``epochs`` (neither: one epoch). ``dead_after_tokens``: a latent
    that has not fired for that many tokens is dead and gets the AuxK loss (``aux_k``
    latents per token, default ``input_dim // 2``; ``aux_coef = 0`` disables it).
    ``init_decoder_bias`` sets the decoder bias to the first batch's mean (Gao et al.
    use the geometric median). ``amp`` applies on CUDA only: ``auto`` means bf16.
    """

    batch_size: int = 4096
    steps: int | None = None
    epochs: float | None = None
    lr: float = 5e-4
    lr_final: float = 1e-6
    warmup_frac: float = 0.05
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0
    aux_coef: float = 1 / 32
    aux_k: int | None = None
    dead_after_tokens: int = 10_000_000
    init_decoder_bias: bool = True
    log_every: int = 100
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "cpu"
    amp: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        check_int("batch_size", self.batch_size, 1)
        if self.steps is not None and self.epochs is not None:
            raise ConfigError(f"give steps or epochs, not both (got steps={self.steps}, epochs={self.epochs})")
        if self.steps is not None:
            check_int("steps", self.steps, 1)
        if self.epochs is not None:
            check_float("epochs", self.epochs, 0.0, inclusive=False)
        for name in ("lr", "lr_final", "weight_decay", "grad_clip", "aux_coef"):
            check_float(name, getattr(self, name), 0.0)
        check_float("eps", self.eps, 0.0, inclusive=False)
        check_float("warmup_frac", self.warmup_frac, 0.0)
        if self.warmup_frac >= 1:
            raise ConfigError(f"warmup_frac must be < 1, got {self.warmup_frac}")
        if not (isinstance(self.betas, tuple) and len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.aux_k is not None:
            check_int("aux_k", self.aux_k, 1)
        for name in ("dead_after_tokens", "log_every", "checkpoint_every"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ConfigError(
                f"device must be a torch device name such as 'cpu' or 'cuda:0', got {self.device!r}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training config key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**values)


@dataclass
class TrainReport:
    """What a run did: steps, tokens, the last logged metrics and the full log history."""

    steps: int
    total_steps: int
    tokens_seen: int
    completed: bool
    resumed_from: int | None
    elapsed_s: float
    final: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def learning_rate(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_frac`` of the steps, then cosine to ``lr_final``."""
    warmup = max(1, round(config.warmup_frac * total)) if config.warmup_frac > 0 else 0
    return warmup_cosine(step, total, config.lr, warmup, config.lr_final)


def _autocast(config: TrainConfig, device: torch.device) -> tuple[contextlib.AbstractContextManager, bool]:
    """(autocast context, needs a grad scaler); fp32 everywhere but CUDA."""
    if device.type != "cuda" or config.amp == "off":
        return contextlib.nullcontext(), False
    dtype = torch.float16 if config.amp == "fp16" else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype), dtype == torch.float16


def _batches(source, step: int):
    """Batches from training step ``step`` on, across epochs, until the source runs dry."""
    per_epoch = source.batches_per_epoch
    epoch, skip = divmod(step, per_epoch) if per_epoch else (0, step)
    while True:
        produced = False
        for batch in source.epoch(epoch):
            produced = True
            if skip:
                skip -= 1
                continue
            yield batch
        if not produced:
            return
        epoch += 1


def _total_steps(config: TrainConfig, source) -> int:
    if config.steps is not None:
        return config.steps
    per_epoch = source.batches_per_epoch
    if per_epoch is None:
        raise ConfigError("an iterable of batches without len() needs TrainConfig.steps, not epochs")
    return max(1, math.ceil((config.epochs or 1.0) * per_epoch))


def _sae_document(sae: SAE) -> dict[str, Any]:
    return {"variant": sae.variant, **sae.config.to_dict()}


def _check_resumable(info: dict[str, Any], sae: SAE, config: TrainConfig, where: Path) -> None:
    if info.get("sae") != _sae_document(sae):
        raise ConfigError(
            f"checkpoint in {where} is of another SAE ({info.get('sae')}), not {_sae_document(sae)}; "
            "delete it or train with resume=False"
        )
    saved = {k: v for k, v in info.get("train_config", {}).items() if k not in _RESUME_FREE}
    current = {k: v for k, v in config.to_dict().items() if k not in _RESUME_FREE}
    changed = sorted(k for k in current if saved.get(k) != current[k])
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ConfigError(
            f"checkpoint in {where} was trained with other settings ({detail}); "
            "delete it or use the same settings"
        )


def train_sae(
    sae: SAE,
    tokens,
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    progress: Progress | None = None,
) -> TrainReport:
    """Train ``sae`` in place on ``tokens`` and return a report; the SAE ends in eval mode.

    ``tokens``: a tensor ``(..., input_dim)``, a path to safetensors token shards, or an
    iterable of batches. With ``checkpoint_dir``, a checkpoint is written every
    ``checkpoint_every`` steps and at the end, and (``resume=True``) training continues
    from the latest one; ``resume=False`` deletes the folder's checkpoints and starts
    over. ``progress`` receives each logged metrics dict (step, loss, mse, aux,
    explained_variance, l0, dead_latents, dead_fraction, lr, ...), e.g. to drive a
    progress bar.
    """
    if not isinstance(sae, SAE):
        raise ConfigError(f"train_sae needs an SAE, got {type(sae).__name__}")
    config = config or TrainConfig()
    source = batch_source(tokens, config.batch_size, config.seed)
    dim = getattr(source, "dim", sae.input_dim)
    if dim != sae.input_dim:
        raise ConfigError(f"tokens have dimension {dim} but the SAE expects input_dim={sae.input_dim}")
    total = _total_steps(config, source)
    device = torch.device(config.device)
    sae.to(device).train()
    optimizer = torch.optim.AdamW(
        sae.parameters(), lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
    )
    autocast, needs_scaler = _autocast(config, device)
    scaler = torch.amp.GradScaler("cuda") if needs_scaler else None
    since_fired = torch.zeros(sae.n_concepts, dtype=torch.long, device=device)
    step, tokens_seen, history, resumed_from = 0, 0, [], None

    if checkpoint_dir is not None and not resume:
        clear_checkpoints(checkpoint_dir)
    if checkpoint_dir is not None and resume:
        found = latest_checkpoint(checkpoint_dir)
        if found is not None:
            _check_resumable(found.info, sae, config, Path(checkpoint_dir))
            since_fired = found.restore(sae, optimizer)["tokens_since_fired"]
            step = resumed_from = found.step
            tokens_seen, history = found.info["tokens_seen"], found.info["history"]
            if scaler is not None and found.info.get("scaler"):
                scaler.load_state_dict(found.info["scaler"])

    started = time.perf_counter()
    batches = _batches(source, step)
    completed = step >= total
    while step < total:
        batch = next(batches, None)
        if batch is None:
            break
        x = batch.to(device=device, dtype=torch.float32).reshape(-1, batch.shape[-1])
        if step == 0 and config.init_decoder_bias and sae.config.decoder_bias:
            with torch.no_grad():
                sae.b_dec.copy_(x.mean(dim=0))
        lr = learning_rate(step, total, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        dead = since_fired >= config.dead_after_tokens
        loss, parts, aux, codes, x_hat = _step(sae, optimizer, scaler, autocast, x, dead, config)
        with torch.no_grad():
            since_fired.add_(x.shape[0]).masked_fill_((codes > 0).any(dim=0), 0)
        step += 1
        tokens_seen += x.shape[0]
        completed = step >= total

        if step % config.log_every == 0 or completed:
            metrics = _metrics(step, total, tokens_seen, lr, loss, parts, aux, x, codes, x_hat, since_fired, config)
            history.append(metrics)
        if checkpoint_dir is not None and (step % config.checkpoint_every == 0 or completed):
            info = {
                "tokens_seen": tokens_seen,
                "total_steps": total,
                "sae": _sae_document(sae),
                "train_config": config.to_dict(),
                "history": history,
                "scaler": scaler.state_dict() if scaler is not None else None,
            }
            save_checkpoint(checkpoint_dir, step, sae, optimizer, {"tokens_since_fired": since_fired}, info)
        if progress is not None and history and history[-1]["step"] == step:
            progress(history[-1])

    sae.eval()
    return TrainReport(
        steps=step,
        total_steps=total,
        tokens_seen=tokens_seen,
        completed=completed,
        resumed_from=resumed_from,
        elapsed_s=time.perf_counter() - started,
        final=history[-1] if history else {},
        history=history,
    )


def _step(sae, optimizer, scaler, autocast, x, dead, config):
    """One optimisation step: losses, backward, clipping, update, constraints."""
    with autocast:
        pre_codes, codes = sae.encode(x)
        atoms = sae.dictionary  # computed once per step for a structured dictionary
        x_hat = sae.decode(codes, atoms)
        parts = sae.reconstruction_loss(x, pre_codes, codes, x_hat, sae, dictionary=atoms)
        aux = auxk_loss(
            x, pre_codes, codes, x_hat, sae,
            dead_mask=dead if config.aux_coef > 0 else None,
            k_aux=config.aux_k, coef=config.aux_coef, dictionary=atoms,
        )
        loss = parts["total"] + aux["total"]
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(sae.parameters(), config.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    sae.constrain_()
    return loss, parts, aux, codes, x_hat


@torch.no_grad()
def _metrics(step, total, tokens_seen, lr, loss, parts, aux, x, codes, x_hat, since_fired, config) -> dict[str, Any]:
    residual = (x - x_hat.float()).square().sum()
    variance = (x - x.mean(dim=0)).square().sum().clamp_min(1e-12)
    dead = since_fired >= config.dead_after_tokens
    metrics = {
        "step": step,
        "total_steps": total,
        "tokens_seen": tokens_seen,
        "lr": lr,
        "loss": float(loss),
        "aux": float(aux["aux"]),
        "explained_variance": float(1 - residual / variance),
        "l0": float((codes > 0).sum(dim=-1).float().mean()),
        "dead_latents": int(dead.sum()),
        "dead_fraction": float(dead.float().mean()),
    }
    metrics.update({name: float(value) for name, value in parts.items() if name != "total"})
    return metrics
