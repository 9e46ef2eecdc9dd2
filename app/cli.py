"""The ``blindspot`` command line.

The one place that composes both sides: pipeline commands call ``precompute``, and
``serve`` starts the web app. Errors caused by the user's input are printed as one
clear message (exit code 2), never as a traceback.
"""

from __future__ import annotations

import logging
import sys
from importlib import resources
from pathlib import Path

import click
from rich.markup import escape

from precompute.errors import BlindspotError
from precompute.progress import console, progress_bar

DEMO_CONFIG = "demo.toml"


def _say(message: str) -> None:
    console.print(message, markup=False)


def _report(report) -> None:
    for note in report.notes:
        console.print(f"[yellow]not done:[/] {escape(note)}")
    for manifest in report.manifests:
        skipped = sum(manifest["skipped"].values())
        extra = f", skipped {skipped} ({', '.join(f'{k}: {v}' for k, v in manifest['skipped'].items())})" if skipped else ""
        counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"].items())
        console.print("[green]done:[/] " + escape(f"{manifest['stage']} {manifest['target']}: {counts}{extra} "
                                                   f"in {manifest['seconds']:.1f} s"))


def demo_config_path() -> Path:
    """The packaged demo config (also at ``configs/demo.toml`` in the repository)."""
    return Path(str(resources.files("precompute") / "configs" / DEMO_CONFIG))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """Blindspot Atlas: what a text-to-image model cannot (or too eagerly does) draw.

    Start with `blindspot demo`: it builds an atlas from the embedded world and
    serves the explorer on http://127.0.0.1:8000.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _serve(atlas: Path, host: str, port: int, allow_hosts: tuple[str, ...] = ()) -> None:
    import uvicorn

    from app.main import create_app
    from app.security import allowed_hosts
    from app.settings import Settings
    from backend.atlas import Atlas

    Atlas(atlas).close()  # fail now, with the reason, if the folder is not a whole, readable atlas
    console.print(f"serving [bold]{escape(str(atlas))}[/] on http://{host}:{port}  (Ctrl+C to stop)")
    if host in ("0.0.0.0", "::"):
        console.print(f"answering requests for {', '.join(sorted(allowed_hosts(host, allow_hosts)))} "
                      "(add the name or address others use with --allow-host)")
    settings = Settings(atlas=atlas, host=host, port=port, allow_hosts=allow_hosts)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


def _allow_host_option(command):
    return click.option(
        "--allow-host", "allow_hosts", multiple=True, envvar="BLINDSPOT_ALLOW_HOST", metavar="NAME",
        help="Also answer requests for this host name or address (repeatable; loopback names and the --host "
             "address are always answered; '*' answers any, which lets other sites' pages reach the explorer "
             "through DNS rebinding). Environment: BLINDSPOT_ALLOW_HOST, names separated by spaces.")(command)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-atlas"), show_default=True,
              help="Atlas folder to build (reused when it was built from the same config).")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Run config to use instead of the packaged demo config.")
@click.option("--rebuild", is_flag=True, help="Run the stages even when the atlas is current.")
@click.option("--serve/--no-serve", default=True, show_default=True, help="Serve the explorer after building.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@_allow_host_option
def demo(out: Path, config_path: Path | None, rebuild: bool, serve: bool, host: str, port: int,
         allow_hosts: tuple[str, ...]) -> None:
    """Build an atlas from the embedded world and serve the explorer.

    Runs every pipeline stage that exists on the packaged demo config (the
    embedded world against planted generators), says which stages do not exist
    yet, and serves the result. A second run reuses the atlas and serves at once.
    """
    from precompute.config import load_config
    from precompute.pipeline import atlas_is_current, run_pipeline

    config = load_config(config_path or demo_config_path())
    if rebuild or not atlas_is_current(out, config):
        _report(run_pipeline(config, out, say=_say))
    else:
        console.print(f"reusing the atlas in [bold]{escape(str(out))}[/] (built from this config; --rebuild to redo)")
    if serve:
        _serve(out, host, port, allow_hosts)


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Atlas folder to write.")
@click.option("--stages", default=None,
              help="Comma-separated stages to run (default: all): sample, generate, train, encode, analyze, internal, build.")
@click.option("--work", type=click.Path(path_type=Path), default=None,
              help="Folder for resumable stage outputs (default: <out>.work beside the atlas).")
def precompute(config_path: Path, out: Path, stages: str | None, work: Path | None) -> None:
    """Run a config's pipeline stages and write the atlas OUT.

    Each stage is resumable: finished shards in the work folder are never redone,
    and a changed config redoes only what it changes. The atlas is written
    atomically: a half-written atlas is never visible.
    """
    from precompute.config import load_config
    from precompute.pipeline import parse_stages, run_pipeline

    config = load_config(config_path)
    _report(run_pipeline(config, out, work=work, stages=parse_stages(stages), say=_say))


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Atlas folder the run is for.")
@click.option("--work", type=click.Path(path_type=Path), default=None, help="Work folder (default: <out>.work).")
def generate(config_path: Path, out: Path, work: Path | None) -> None:
    """Sample the real items and generate every generator's counterparts (no atlas build)."""
    from precompute.config import load_config
    from precompute.pipeline import run_pipeline

    config = load_config(config_path)
    _report(run_pipeline(config, out, work=work, stages=["sample", "generate"], say=_say))


@cli.command()
@click.argument("atlas", type=click.Path(path_type=Path, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@_allow_host_option
def serve(atlas: Path, host: str, port: int, allow_hosts: tuple[str, ...]) -> None:
    """Serve the explorer for the atlas folder ATLAS.

    The atlas is checked whole first (its file's length, every table and its row
    count); a damaged one is refused with the command that rebuilds it.
    """
    _serve(atlas, host, port, allow_hosts)


@cli.group()
def world() -> None:
    """The embedded world: a synthetic data set where the truth is known."""


@world.command("sample")
@click.option("--n", "count", type=click.IntRange(1), default=100, show_default=True, help="Images to write.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder to write.")
@click.option("--size", type=click.IntRange(16, 1024), default=64, show_default=True, help="Image side in pixels.")
@click.option("--noise", type=click.FloatRange(0.0, 1.0), default=0.02, show_default=True,
              help="Share of stated caption attributes replaced by a wrong value.")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Worker processes (default: all cores).")
def world_sample(count: int, seed: int, out: Path, size: int, noise: float, workers: int | None) -> None:
    """Write N world images with captions.jsonl and annotations.jsonl to OUT.

    The folder is in the local-folder source format, so it can be read back with
    `kind = "folder"` in a run config.
    """
    from precompute.world import write_samples

    with progress_bar(count, "render world images", "img") as advance:
        written = write_samples(out, count, seed, size=size, noise=noise, workers=workers, progress=advance)
    console.print(f"wrote {written} images, captions.jsonl and annotations.jsonl to {out}", markup=False)


@world.command("train-encoder")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Weights folder to write.")
@click.option("--steps", type=click.IntRange(1), default=1600, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--images", "n_images", type=click.IntRange(1), default=30_000, show_default=True,
              help="World images rendered once for training.")
@click.option("--seed", type=click.IntRange(0), default=1000, show_default=True,
              help="World seed of the training images (the demo uses 0; keep them apart).")
def world_train_encoder(out: Path, steps: int, batch_size: int, lr: float, n_images: int, seed: int) -> None:
    """Train the world encoder, the demo's energy model (patch tokens like DINOv2's).

    Reports held-out AUROC of a linear probe per world concept when done.
    """
    from precompute.encoders.train_world_encoder import train_world_encoder

    with progress_bar(steps, "train world encoder", "step") as advance:
        done = {"step": 0}

        def progress(event: dict) -> None:
            if event.get("phase") == "train":
                advance(event["step"] - done["step"])
                done["step"] = event["step"]

        report = train_world_encoder(out, steps=steps, batch_size=batch_size, seed=seed, progress=progress,
                                     n_images=n_images, lr=lr)
    console.print(f"[green]done:[/] saved to {escape(str(out))}; " + ", ".join(
        f"{k} {v:.3f}" for k, v in report.items() if isinstance(v, float)))


@world.command("train-lens")
@click.option("--encoder-out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for the world encoder with its factor read-out (config.json + model.safetensors); "
                   "without it, the SAE is trained on the tokens of the encoder given by --trunk as they are.")
@click.option("--sae-out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for the output-lens SAE trained on the new encoder's tokens.")
@click.option("--trunk", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="World encoder whose trunk the read-out is trained on (default: the shipped one).")
@click.option("--readout-steps", type=click.IntRange(1), default=3000, show_default=True)
@click.option("--readout-images", type=click.IntRange(100), default=8000, show_default=True)
@click.option("--variant", type=click.Choice(["topk", "batchtopk", "matryoshka", "rasae"]), default="topk",
              show_default=True)
@click.option("--concepts", type=click.IntRange(1), default=64, show_default=True)
@click.option("--k", type=click.IntRange(1), default=8, show_default=True)
@click.option("--sae-images", type=click.IntRange(100), default=6000, show_default=True)
@click.option("--epochs", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=5e-4, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=1024, show_default=True)
@click.option("--sae-seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--readout", type=click.Choice(["trunk", "heads"]), default="trunk", show_default=True,
              help="The tokens the SAE reads: the encoder's own, or its heads' predictions split into one token "
                   "per concept family (the demo's lens, encode.energy_model = 'world-heads').")
@click.option("--aggregation", type=click.Choice(["sum", "max"]), default="sum", show_default=True,
              help="The energy held-out detectability is scored on (encode.energy_aggregation; the demo's: max).")
def world_train_lens(encoder_out: Path | None, sae_out: Path, trunk: Path | None, readout_steps: int,
                     readout_images: int, variant: str, concepts: int, k: int, sae_images: int, epochs: float,
                     lr: float, batch_size: int, sae_seed: int, readout: str, aggregation: str) -> None:
    """Train the embedded world's output lens: the encoder's factor read-out (with --encoder-out), then the SAE.

    Both report held-out detectability (per world concept, the AUROC of the best
    concept's energy) in training.json files beside the weights.
    """
    from precompute.encoders.train_world_lens import train_factor_readout, train_world_sae
    from precompute.encoders.world_encoder import SHIPPED_WEIGHTS

    encoder = trunk or SHIPPED_WEIGHTS
    if encoder_out is not None:
        with progress_bar(readout_steps, "train factor read-out", "step") as advance:
            readout = train_factor_readout(encoder_out, encoder, n_images=readout_images,
                                           steps=readout_steps, progress=lambda event: advance(100))
        oracle = readout["held_out"]["oracle"]
        console.print(f"[green]done:[/] read-out -> {escape(str(encoder_out))}; held-out oracle AUROC min "
                      f"{oracle['min_auroc']:.3f}, undetected {', '.join(oracle['undetected']) or 'none'}")
        encoder = encoder_out
    with progress_bar(None, f"train {variant} SAE ({concepts} concepts)", "step") as advance:
        document = train_world_sae(sae_out, encoder, variant=variant, n_concepts=concepts, k=k, lr=lr,
                                   n_images=sae_images, epochs=epochs, batch_size=batch_size, readout=readout,
                                   aggregation=aggregation, sae_seed=sae_seed, progress=lambda event: advance(50))
    held = document["held_out"]
    console.print(f"[green]done:[/] SAE -> {escape(str(sae_out))}; held-out detectability min {held['min_auroc']:.3f}, "
                  f"undetected {', '.join(held['undetected']) or 'none'}")


@world.command("train-generator")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Pipeline folder to write (model_index.json + components).")
@click.option("--steps", type=click.IntRange(1), required=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--images", "n_images", type=click.IntRange(1), default=48_000, show_default=True,
              help="World images rendered once for training.")
@click.option("--work", type=click.Path(path_type=Path), default=None,
              help="Training set cache and checkpoints (default: <out>.work); a killed run resumes from it.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop (and save) after this many minutes.")
def world_train_generator(out: Path, steps: int, batch_size: int, lr: float, seed: int, n_images: int,
                          work: Path | None, minutes: float | None) -> None:
    """Train the tiny world text-to-image model (UNet2DConditionModel + CLIP text encoder).

    Loaded back with the same from_pretrained path as Stable Diffusion; use it as a
    generator with `kind = "world-model"`.
    """
    import time

    from precompute.generators.train_world_model import train_world_model

    deadline = time.time() + minutes * 60 if minutes else None
    with progress_bar(steps, "train world generator", "step") as advance:
        saved = train_world_model(out, steps, batch_size=batch_size, lr=lr, seed=seed, progress=advance,
                                  work_dir=work, n_images=n_images, deadline=deadline)
    console.print(f"[green]done:[/] saved the pipeline to {escape(str(saved))}")


@cli.group()
def sae() -> None:
    """Sparse autoencoders: train one on token shards, or convert the paper's checkpoint."""


@sae.command("train")
@click.argument("tokens", type=click.Path(path_type=Path, exists=True))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="SAE folder to write.")
@click.option("--variant", type=click.Choice(["rasae", "topk", "batchtopk", "matryoshka"]), default="rasae",
              show_default=True)
@click.option("--concepts", "n_concepts", type=click.IntRange(1), default=32_000, show_default=True)
@click.option("--k", type=click.IntRange(1), default=5, show_default=True, help="Active concepts per token.")
@click.option("--groups", default=None, help="Matryoshka group sizes, comma-separated (sum = concepts).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None, help="Default: one epoch.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Train this many steps instead of epochs.")
@click.option("--batch-size", type=click.IntRange(1), default=4096, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True)
@click.option("--aux-coef", type=float, default=1 / 32, show_default=True, help="Dead-latent auxiliary loss weight.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ... (mixed precision on CUDA).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fresh", is_flag=True, help="Discard checkpoints in OUT instead of resuming from them.")
def sae_train(tokens: Path, out: Path, variant: str, n_concepts: int, k: int, groups: str | None,
              epochs: float | None, steps: int | None, batch_size: int, lr: float, aux_coef: float, device: str,
              seed: int, fresh: bool) -> None:
    """Train an SAE on TOKENS (a safetensors file with a "tokens" tensor, or a folder of them).

    AdamW with linear warm-up and cosine decay, gradient clipping, an auxiliary loss
    for dead latents, checkpoints in OUT/checkpoints (a killed run resumes).
    Explained variance, L0 and dead latents are reported as it trains.
    """
    from precompute.sae import train_sae_from_tokens_file

    settings: dict = {"n_concepts": n_concepts, "k": k}
    if groups:
        settings["group_sizes"] = [int(g) for g in groups.split(",")]
    training = {"batch_size": batch_size, "lr": lr, "aux_coef": aux_coef, "device": device, "seed": seed}
    if steps is not None:
        training["steps"] = steps
    elif epochs is not None:
        training["epochs"] = epochs
    last: dict = {}

    def progress(metrics: dict) -> None:
        last.update(metrics)
        console.print(f"step {metrics.get('step')}/{metrics.get('total_steps', '?')}  loss {metrics.get('loss', 0):.4f}"
                      f"  explained variance {metrics.get('explained_variance', 0):.3f}  L0 {metrics.get('l0', 0):.1f}"
                      f"  dead {metrics.get('dead_fraction', 0):.1%}")

    report = train_sae_from_tokens_file(tokens, variant, settings, training, out, resume=not fresh, progress=progress)
    final = report.final or last
    console.print(f"[green]done:[/] {report.steps} steps, {report.tokens_seen:,} tokens; explained variance "
                  f"{final.get('explained_variance', float('nan')):.3f}, L0 {final.get('l0', float('nan')):.1f}; "
                  f"saved to {escape(str(out))}")


@sae.command("import-rasae")
@click.argument("path", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="SAE folder to write.")
@click.option("--threshold", type=float, default=None,
              help="BatchTopK inference threshold (default: the checkpoint's own running_threshold; "
                   "the paper's RA-SAE-DINOv2-32k states 0.829). Not for TopK checkpoints.")
@click.option("--top-k", "top_k", type=click.IntRange(min=1), default=None,
              help="Per-token k (default: a TopK checkpoint's own top_k; for BatchTopK, whose top_k counts codes "
                   "per batch, and for state dicts: 5).")
@click.option("--fused", is_flag=True, help="Write a plain BatchTopK/TopK SAE with the fused dictionary (smaller).")
def sae_import_rasae(path: Path, out: Path, threshold: float | None, top_k: int | None, fused: bool) -> None:
    """Convert an overcomplete SAE checkpoint (the paper's pickled RA-SAE) once into config.json + safetensors.

    Reads `torch.save` pickles of whole overcomplete objects (in nn.DataParallel or not)
    with torch's weights-only unpickler: no overcomplete install is needed and no code
    from the file runs. State dicts convert too.
    """
    from precompute.sae import import_rasae
    from precompute.sae.convert_rasae import sparsity_rule

    converted = import_rasae(path, out, threshold=threshold, top_k=top_k, fused=fused)
    console.print("[green]done:[/] " + escape(f"{converted.variant}: {converted.n_concepts} concepts of dimension "
                                             f"{converted.input_dim}, {sparsity_rule(converted)} -> {out}"))


def _seed_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 0,1,2, got {value!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise click.BadParameter(f"expected at least one seed >= 0, got {value!r}")
    return seeds


@cli.group("eval")
def evaluate() -> None:
    """Score an atlas against known truth."""


@evaluate.command("world")
@click.argument("atlas", type=click.Path(path_type=Path, file_okay=False), required=False)
@click.option("--min-auroc", type=click.FloatRange(0.5, 1.0), default=0.75, show_default=True,
              help="An SAE concept detects its world concept from this AUROC on (recall, false alarms, Spearman).")
@click.option("--random-plants", type=click.IntRange(1), default=None,
              help="Instead of scoring ATLAS: draw this many random planted generators per world seed (plus one "
                   "no-effect control), build an atlas per seed and report mean and spread.")
@click.option("--seeds", default="101,202,303", show_default=True, callback=_seed_list,
              help="World seeds of the randomised worlds (with --random-plants).")
@click.option("--pairs", type=click.IntRange(2), default=2000, show_default=True,
              help="Real-generated pairs per randomised world.")
@click.option("--effects", type=click.IntRange(1, 6), default=3, show_default=True,
              help="Planted effects per random generator (each in another family).")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Config whose output lens and analysis the randomised worlds use (default: the demo's).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for the randomised worlds' atlases (default: a temporary folder, removed after).")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def eval_world(atlas: Path | None, min_auroc: float, random_plants: int | None, seeds: tuple[int, ...], pairs: int,
               effects: int, config_path: Path | None, out: Path | None, as_json: bool) -> None:
    """Score a world ATLAS against its ground truth, or randomised worlds with --random-plants.

    Per planted generator: recall of the planted effects that really changed their world
    concept, false alarms (flags the truth does not back), Spearman of delta against the
    true log-odds change, one-to-one through the world concept each SAE concept detects
    best; the null controls' flags (which must be 0); and the lens's detectability table.
    The explained-truth numbers are a labelled diagnostic (a randomly rotated lens scores
    well on them; see the README).
    """
    import json

    from precompute.evaluation import evaluate_world

    if random_plants is not None:
        if atlas is not None:
            raise click.UsageError("give an ATLAS to score or --random-plants, not both")
        from precompute.config import load_config
        from precompute.evaluation.randomised import evaluate_random_worlds

        base = load_config(config_path or demo_config_path())
        summary = evaluate_random_worlds(base, seeds, random_plants, pairs=pairs, effects=effects, out=out,
                                         min_auroc=min_auroc, say=_say)
        if as_json:
            click.echo(json.dumps(summary, indent=2, allow_nan=False))
        else:
            _print_random_worlds(summary)
        return
    if atlas is None:
        raise click.UsageError("give the ATLAS to score (or --random-plants N)")
    evaluation = evaluate_world(atlas, min_auroc=min_auroc)
    if as_json:
        click.echo(json.dumps(evaluation.to_dict(), indent=2, allow_nan=False))
        return
    _print_world(evaluation)


def _fraction(part: int, whole: int, value: float | None) -> str:
    return "-" if value is None else f"{part}/{whole} = {value:.2f}"


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_world(evaluation) -> None:
    from rich.table import Table

    table = Table("generator", "recall", "false alarms", "Spearman", "missed", "ineffective plants",
                  "diagnostic: Spearman of relative delta", "diagnostic: unexplained alarms",
                  "diagnostic: explained Spearman",
                  title=f"ground truth (T = {evaluation.temperature:.4g}, FDR {evaluation.fdr:g}, "
                        f"min AUROC {evaluation.min_auroc:g})")
    for s in evaluation.generators:
        diag = s.diagnostic
        table.add_row(escape(s.source_id + (" (control)" if s.control else "")),
                      _fraction(s.found, s.planted, s.recall),
                      _fraction(s.false_alarms, s.flagged, s.false_alarm_rate),
                      _number(s.spearman), escape(", ".join(s.missed) or "-"), escape(", ".join(s.ineffective) or "-"),
                      _number(s.spearman_relative),
                      _fraction(diag["unexplained_alarms"], s.flagged, diag["unexplained_alarm_rate"]),
                      _number(diag["spearman_explained"]))
    console.print(table)
    nulls = ", ".join(f"{r['control']} {r['flagged']} (paper thresholds alone: {r['flagged_paper']})"
                      for r in evaluation.null_controls)
    console.print(f"null flags: {evaluation.null_flags} ({escape(nulls)})")
    detect = Table("world concept", "family", "prior", "best SAE concept", "AUROC", "detected",
                   title="detectability" + (" (on the images the lens was trained on)" if evaluation.lens_trained_here
                                            else " (held-out images)"))
    for d in evaluation.detectability:
        detect.add_row(d.world_concept, d.family, f"{d.prior:.3f}", "-" if d.concept is None else str(d.concept),
                       _number(d.auroc), "yes" if d.detected else "no")
    console.print(detect)
    missing = evaluation.undetected
    console.print(f"world concepts with prior >= 2% not detected at AUROC >= 0.9: "
                  f"{', '.join(d.world_concept for d in missing) or 'none'}")


def _print_random_worlds(summary: dict) -> None:
    from rich.table import Table

    table = Table("metric", "mean", "std", "min", "max", "n",
                  title=f"randomised worlds: seeds {summary['seeds']}, {summary['plants']} random planted generators "
                        f"+ 1 control each, {summary['pairs']} pairs")
    for name, row in summary["metrics"].items():
        table.add_row(name, *(_number(row[k]) for k in ("mean", "std", "min", "max")), str(row["n"]))
    console.print(table)
    console.print(f"null flags: {summary['null_flags']} in all "
                  f"(per world: {', '.join(str(w['null_flags']) for w in summary['worlds'])})")


@evaluate.command("stability")
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The atlas the config builds.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the second SAE.")
@click.option("--work", type=click.Path(path_type=Path), default=None, help="Work folder (default: <out>.work).")
@click.option("--min-cosine", type=click.FloatRange(0.0, 1.0), default=0.7, show_default=True,
              help="Concepts match across the two SAEs from this decoder cosine on.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_stability(config_path: Path, out: Path, seed: int, work: Path | None, min_cosine: float,
                   as_json: bool) -> None:
    """Spearman of delta between SAEs trained with two seeds on the same tokens.

    Trains (or reuses) the config's SAE and a second one with --seed, encodes and
    analyzes with both, matches concepts by decoder cosine, and rank-correlates
    the deltas of matched concepts per generator. The atlas is not changed.
    """
    import json

    from precompute.config import load_config
    from precompute.evaluation import evaluate_stability

    from precompute.evaluation.world import json_safe

    results = json_safe(evaluate_stability(load_config(config_path), out, seed, work=work, min_cosine=min_cosine,
                                           say=_say))
    if as_json:
        click.echo(json.dumps(results, indent=2, allow_nan=False))
        return
    for source_id, r in results.items():
        console.print(f"{source_id}: Spearman {_number(r['spearman'])} over {r['matched']}/{r['concepts']} matched "
                      f"concepts, {r['matched_live']} of the {r['live']} live "
                      f"(mean best cosine {r['mean_best_cosine']:.3f})")


def _strength_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers such as 1,4, got {value!r}") from None


@evaluate.command("steer")
@click.argument("atlas", type=click.Path(path_type=Path, file_okay=False))
@click.option("--generator", default="world-model", show_default=True, help="Generator with an internal lens.")
@click.option("--concepts", type=click.IntRange(1), default=5, show_default=True,
              help="Most suppressed concepts (with proposed features) to try.")
@click.option("--features", type=click.IntRange(1), default=3, show_default=True,
              help="Proposed features steered per concept; the control steers as many random ones.")
@click.option("--strength", type=float, default=None,
              help="Headline strength per feature: multiples of its typical activation (--mode add, default 1) "
                   "or scale - 1 (--mode scale, default 1).")
@click.option("--doses", default="", callback=_strength_list,
              help="Further strengths for the dose-response, comma-separated (default: half and twice the headline).")
@click.option("--mode", type=click.Choice(["add", "scale"]), default="add", show_default=True)
@click.option("--seeds", default="0,1", show_default=True, callback=_seed_list, help="Generation seeds, comma-separated.")
@click.option("--prompts", type=click.IntRange(1), default=4, show_default=True,
              help="Captions per concept, from items whose real image shows it most.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Denoising steps (default: the generator's).")
@click.option("--max-delta", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="Try concepts with delta below this instead of those flagged suppressed.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.0, min_open=True), default=None,
              help="Time limit of each steer in seconds (default: none); a steer past it is listed as failed.")
@click.option("--min-auroc", type=click.FloatRange(0.0, 1.0), default=None,
              help="Probe floor: concepts whose probe's held-out AUROC is lower are left out (default 0.75).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (valid JSON in every case).")
def eval_steer(atlas: Path, generator: str, concepts: int, features: int, strength: float | None,
               doses: tuple[float, ...], mode: str, seeds: tuple[int, ...], prompts: int, steps: int | None,
               max_delta: float | None, timeout_s: float | None, min_auroc: float | None, as_json: bool) -> None:
    """Steer the suppressed concepts of ATLAS with their proposed internal features, against random features.

    For each suppressed concept of the generator whose probe passes the floor: steer
    with the internal features whose increase raises it, and with as many random
    scored features as a control, at each strength, on captions whose real image
    shows the concept; report how often and by how much the concept's output-lens
    energy rose against the unsteered image (same seed), the specificity (its change
    over the other concepts' mean absolute change) and the dose-response. A steer that
    fails is listed with its reason and the run goes on; the exit code is 1 only when
    nothing could be measured. Images are cached beside the atlas (ATLAS.cache/steer),
    so a re-run is quick.
    """
    import json

    from backend.atlas import Atlas
    from backend.views.internal import PROBE_FLOOR
    from backend.steering.evaluation import SteerEvalSettings, SteerEvaluation, report
    from backend.steering.inputs import DEFAULT_STRENGTH

    Atlas(atlas).close()  # fail now, with the reason, if the folder is not a readable atlas
    strength = DEFAULT_STRENGTH[mode] if strength is None else strength
    settings = SteerEvalSettings(concepts=concepts, features=features, strength=strength,
                                 doses=doses or (strength / 2, strength * 2), mode=mode, seeds=seeds, prompts=prompts,
                                 steps=steps, max_delta=max_delta, timeout_s=timeout_s,
                                 min_auroc=PROBE_FLOOR if min_auroc is None else min_auroc)
    try:
        evaluation = SteerEvaluation.plan(atlas, generator, settings)
    except BlindspotError as exc:  # NotFound (an unknown generator) included
        if not as_json:
            raise
        click.echo(json.dumps(report(generator, settings, [], [], [], str(exc)), indent=2))
        sys.exit(1)
    with progress_bar(len(evaluation.steers), "steer", "steer") as advance:
        result = evaluation.run(progress=advance)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _steer_table(result)
    if not result["steers"]["done"]:
        if not as_json:
            console.print(f"[red]nothing measured:[/] {result['error'] or 'every steer failed'}")
        sys.exit(1)


def _steer_table(result: dict) -> None:
    """The eval steer report as console tables: per concept at the headline strength, the dose-response, failures."""
    from rich.table import Table

    def cells(arm: dict) -> list[str]:
        if not arm["trials"]:
            return ["-", "-", "-", "-"]
        specificity = "-" if arm["specificity"] is None else f"{arm['specificity']:.2f}"
        return [f"{arm['raised']:.0%} of {arm['trials']}", f"{arm['mean_change']:+.3f}",
                f"{arm['median_change']:+.3f}", specificity]

    strength = result["settings"]["strength"]
    table = Table("concept", "delta", "AUROC", "steered with", "features", "energy rose", "mean change",
                  "median change", "specificity", title=f"strength {strength:g} ({result['settings']['mode']} mode)")
    for row in result["concepts"]:
        for arm in ("attributed", "control"):
            first = arm == "attributed"
            auroc = "-" if row["probe_auroc"] is None else f"{row['probe_auroc']:.2f}"
            table.add_row(escape(f"{row['concept']} {row['label']}") if first else "",
                          f"{row['delta']:.3f}" if first else "", auroc if first else "", arm,
                          ", ".join(map(str, row[arm]["features"])), *cells(row[arm]))
    for arm in ("attributed", "control"):
        table.add_row("all" if arm == "attributed" else "", "", "", arm, "", *cells(result["overall"][arm]))
    console.print(table)
    doses = Table("strength", "arm", "energy rose", "mean change", "median change", "specificity",
                  title="dose-response (all concepts)")
    for dose in result["dose_response"]:
        for arm in ("attributed", "control"):
            doses.add_row(f"{dose['strength']:g}" if arm == "attributed" else "", arm, *cells(dose[arm]))
    console.print(doses)
    for row in result["skipped"]:
        console.print(f"[yellow]left out:[/] concept {row['concept']} {row['label']}: {row['reason']}")
    steers = result["steers"]
    console.print(f"steers: {steers['planned']} planned, {steers['done']} done, {steers['failed']} failed")
    for failure in result["failures"]:
        console.print(f"[red]failed:[/] concept {failure['concept']} {failure['arm']} strength {failure['strength']:g} "
                      f"seed {failure['seed']} \"{failure['prompt']}\": {failure['reason']}")


def main() -> None:
    """Console-script entry: run the CLI, turning input errors into one clear message."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BlindspotError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")  # a path or a message may hold [brackets]
        sys.exit(2)


if __name__ == "__main__":
    main()
