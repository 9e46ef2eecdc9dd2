"""Stage encode (output lens): images -> energy-model tokens -> SAE codes -> sparse energies.

Per image set (real, then each generator) and per sample shard it stores:

- ``energies``: (position, concept, energy) non-zeros, where the energy of concept k in
  an image is the sum of its SAE codes over the image's tokens (all tokens, as the
  paper's code does; patch tokens only with ``encode.patch_tokens_only``);
- ``candidates``: the shard's top images per concept by mean code over patch tokens
  (the global exemplars are among the union of the shards' candidates);
- ``cooc.npz``: the shard's sparse Z^T Z over token codes, and its token count.

Then ``exemplars``: the global top images per concept and side, with their token maps
(and, for the best one of each side, its counterparts' maps) as heatmaps. Codes are
never held densely for more than a chunk of tokens, and never as a K x K matrix.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch

from precompute.analysis.cooccurrence import Cooccurrence
from precompute.errors import ConfigError
from precompute.fileio import atomic_path
from precompute.manifest import Manifest
from precompute.encoders.lens import Lens
from precompute.stages.common import StageContext, digest_of, file_digest, resolve_device
from precompute.stages.images import ImageSet, image_sets
from precompute.stages.shards import ShardStore
from precompute.stages.train import jpeg_quality, sae_path

ENERGIES = pa.schema([("position", pa.int64()), ("concept", pa.int32()), ("energy", pa.float32())])
CANDIDATES = pa.schema([("concept", pa.int32()), ("position", pa.int64()), ("score", pa.float32())])
MAPS = pa.schema([
    ("source_id", pa.string()), ("concept", pa.int32()), ("position", pa.int64()),
    ("scale", pa.float32()), ("heatmap", pa.binary()),
])


def lens_digest(ctx: StageContext) -> str:
    """The output lens's key: energy model, SAE content and energy rule.

    Keyed by the SAE's bytes, not its path, so a moved work folder stays valid; each
    lens has its own encode and analyze folders, so two SAEs (a stability check) can
    share one work folder.
    """
    path = sae_path(ctx)
    if not (path / "model.safetensors").is_file():
        raise ConfigError(f"no output-lens SAE at {path}: give encode.sae or run the train stage first")
    encode = ctx.config.encode
    jpeg = () if jpeg_quality(encode) is None else (("jpeg", encode.jpeg_quality),)
    return digest_of(encode.energy_model, file_digest(path / "model.safetensors"),
                     (path / "config.json").read_text(), encode.patch_tokens_only, ctx.energy_identity(), *jpeg,
                     *(() if encode.energy_aggregation == "sum" else (("aggregation", encode.energy_aggregation),)))


def lens_dir(ctx: StageContext, digest: str) -> Path:
    return ctx.work / "encode" / digest


def open_lens(ctx: StageContext) -> Lens:
    """The run's output lens: its config's energy model and SAE (the given one, the shipped one for
    ``encode.sae = "world"``, or the one the train stage trained), keyed by ``lens_digest``."""
    from precompute.sae import load_sae

    encode = ctx.config.encode
    path = sae_path(ctx)
    if not (path / "config.json").is_file():
        raise ConfigError(f"no output-lens SAE at {path}: give encode.sae or run the train stage first")
    model = ctx.energy_model()
    sae = load_sae(path, device=resolve_device(encode.device))
    return Lens(model, sae, encode.patch_tokens_only, encode.batch_size, jpeg_quality(encode), lens_digest(ctx),
                sae_source=f"the SAE at {path}", model_name=encode.energy_model, aggregation=encode.energy_aggregation)


def _shard_rows(image_set: ImageSet) -> dict[int, list[int]]:
    rows: dict[int, list[int]] = defaultdict(list)
    for index, shard in enumerate(image_set.shard_of):
        rows[shard].append(index)
    return rows


def _encode_shard(lens: Lens, image_set: ImageSet, rows: list[int], keep: int):
    positions = np.array([image_set.positions[i] for i in rows], dtype=np.int64)
    paths = [image_set.paths[i] for i in rows]
    energy = torch.zeros(len(rows), lens.n_concepts)
    patch_mean = torch.zeros(len(rows), lens.n_concepts)
    cooc = Cooccurrence(lens.n_concepts)
    for first, codes in lens.codes(paths):
        patches = codes[:, lens.patch_mask]
        energy[first:first + codes.shape[0]] = lens.energy(codes)
        patch_mean[first:first + codes.shape[0]] = patches.mean(1)
        flat = codes.reshape(-1, codes.shape[-1])
        token, active = flat.nonzero(as_tuple=True)
        cooc.add(sp.csr_array((flat[token, active].numpy(), (token.numpy(), active.numpy())), shape=tuple(flat.shape)))
    image, concept = energy.nonzero(as_tuple=True)
    energies = pa.table({"position": positions[image.numpy()], "concept": concept.int().numpy(),
                         "energy": energy[image, concept].numpy()}, schema=ENERGIES)
    scores, best = patch_mean.topk(min(keep, len(rows)), dim=0)  # (keep, K)
    concept_ids = torch.arange(lens.n_concepts).expand_as(best)
    live = scores > 0
    candidates = pa.table({"concept": concept_ids[live].int().numpy(), "position": positions[best[live].numpy()],
                           "score": scores[live].numpy()}, schema=CANDIDATES)
    return energies, candidates, cooc


def encode_store(ctx: StageContext, lens_digest: str, source_id: str) -> ShardStore:
    from precompute.stages.generate import image_key

    return ShardStore(lens_dir(ctx, lens_digest) / source_id, digest_of(ctx.sample_digest(), lens_digest, source_id,
                                                                 [image_key(g) for g in ctx.config.generators
                                                                  if g.name == source_id]))


def run_encode(ctx: StageContext, lens: Lens | None = None) -> list[dict]:
    """Encode every image set; then pick exemplars and their heatmaps. Return the manifests."""
    lens = lens or open_lens(ctx)
    keep = ctx.config.encode.exemplars
    manifests = []
    sets = image_sets(ctx)
    for image_set in sets:
        store = encode_store(ctx, lens.digest, image_set.source_id)
        manifest = Manifest("encode", image_set.source_id, {"lens": lens.digest, **ctx.config.encode.model_dump(
            mode="json")})
        with ctx.progress(len(image_set.paths), f"encode {image_set.source_id}", "img") as advance:
            for shard, rows in sorted(_shard_rows(image_set).items()):
                if store.finished(shard) is not None:
                    advance(len(rows))
                    continue
                energies, candidates, cooc = _encode_shard(lens, image_set, rows, keep)
                matrix = cooc.matrix() * cooc.tokens  # store the raw sum; shards add up exactly
                sp.save_npz(store.folder / "shards" / f"{shard:05d}.cooc.npz", sp.coo_matrix(matrix))
                store.write(shard, {"energies": energies, "candidates": candidates},
                            {"n_images": len(rows), "tokens": cooc.tokens})
                advance(len(rows))
        manifest.counts.update(images=len(image_set.paths), concepts=lens.n_concepts,
                               nonzero_energies=store.read("energies", ENERGIES).num_rows)
        manifests.append(manifest.finish(store.folder / "manifest.json"))
    _exemplar_maps(ctx, lens, sets, keep)
    return manifests


def exemplar_table(ctx: StageContext, lens_digest: str, source_id: str, keep: int) -> pa.Table:
    """The global top ``keep`` images per concept of one set: (concept, rank, position, score)."""
    candidates = encode_store(ctx, lens_digest, source_id).read("candidates", CANDIDATES).to_pandas()
    if candidates.empty:
        return pa.table({"concept": [], "rank": [], "position": [], "score": []})
    candidates = candidates.sort_values(["concept", "score", "position"], ascending=[True, False, True])
    candidates["rank"] = candidates.groupby("concept").cumcount()
    best = candidates[candidates["rank"] < keep]
    return pa.Table.from_pandas(best[["concept", "rank", "position", "score"]], preserve_index=False)


def cooccurrence(ctx: StageContext, lens_digest: str, source_id: str) -> tuple[sp.csr_array, int]:
    """The set's Z^T Z summed over shards, and its token count."""
    store = encode_store(ctx, lens_digest, source_id)
    total, tokens = None, 0
    for index, meta in zip(store.indices(), store.metas()):
        part = sp.csr_array(sp.load_npz(store.folder / "shards" / f"{index:05d}.cooc.npz"))
        total = part if total is None else total + part
        tokens += meta["tokens"]
    return total, tokens


def maps_path(ctx: StageContext, digest: str) -> Path:
    return lens_dir(ctx, digest) / "maps.parquet"


def _exemplar_maps(ctx: StageContext, lens: Lens, sets: list[ImageSet], keep: int) -> None:
    """Token maps (patch grid) of each exemplar, and of the best exemplar's counterparts in every set."""
    out = maps_path(ctx, lens.digest)
    if out.is_file():
        return
    wanted: dict[str, dict[int, set[int]]] = {s.source_id: defaultdict(set) for s in sets}
    for image_set in sets:
        exemplars = exemplar_table(ctx, lens.digest, image_set.source_id, keep).to_pylist()
        for row in exemplars:
            wanted[image_set.source_id][row["position"]].add(row["concept"])
            if row["rank"] == 0:  # the paper's 2x2: the best image of a side and its counterparts
                for other in sets:
                    wanted[other.source_id][row["position"]].add(row["concept"])
    rows: dict[str, list] = {name: [] for name in MAPS.names}
    grid = lens.model.grid
    total = sum(len(positions) for positions in wanted.values())
    with ctx.progress(total, "exemplar heatmaps", "img") as advance:
        for image_set in sets:
            index_of = {p: i for i, p in enumerate(image_set.positions)}
            positions = sorted(p for p in wanted[image_set.source_id] if p in index_of)
            paths = [image_set.paths[index_of[p]] for p in positions]
            for first, codes in lens.codes(paths):
                patches = codes[:, lens.patch_mask]  # (b, patches, K)
                for offset in range(codes.shape[0]):
                    position = positions[first + offset]
                    concepts = sorted(wanted[image_set.source_id][position])
                    maps = patches[offset][:, concepts].T.reshape(len(concepts), *grid)  # (c, rows, cols)
                    scale = maps.flatten(1).amax(1).clamp_min(1e-12)
                    quantised = (maps / scale[:, None, None] * 255).round().to(torch.uint8).numpy()
                    rows["source_id"] += [image_set.source_id] * len(concepts)
                    rows["concept"] += concepts
                    rows["position"] += [position] * len(concepts)
                    rows["scale"] += scale.tolist()
                    rows["heatmap"] += [q.tobytes() for q in quantised]
                advance(codes.shape[0])
    with atomic_path(out) as temp:
        pq.write_table(pa.table(rows, schema=MAPS), temp)
