"""Which token layout lets an SAE see every world concept: detectability of the world lens under three layouts.

    .venv/bin/python bench/world_lens_tokens.py [--train 6000] [--test 2000] [--configs 64:8:10,64:2:15]

An experiment for the world lens (the output lens of the embedded world), not a part of the pipeline. Tokens of
world images (train: world seed 1002, scored on seed 1003, as ``blindspot world train-lens``) are built three ways
from the shipped world encoder's trunk and its trained heads:

- ``trunk``: the shipped lens's tokens (1 CLS + 64 patches, 128 dimensions);
- ``heads``: the same 65 tokens in the encoder's own concept coordinates (``WorldEncoder.head_tokens``: 48
  dimensions, one per world concept, the heads' predictions weighted by what each patch covers);
- ``families``: the ``heads`` tokens split into one token per family for the SAE (``token_groups``; 8 per position),
  so no token holds two families' values at once, and a position's codes summed over its families, as the demo's
  lens (``Lens.token_codes``) computes them.

Per layout the "oracle" is each coordinate summed over an image's tokens (what a lens with one concept per world
concept would see); then an SAE (``precompute.sae``, the trainer of ``train-lens``; TopK unless the entry names a
variant) per ``--configs`` entry ``[variant/]concepts:k:epochs`` is trained on the training tokens and scored with
``train_world_lens.detectability``: per world concept the best SAE concept's AUROC on the held-out images, and the
concepts of prior >= 2% below 0.9.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from precompute.encoders.base import training_rows
from precompute.encoders.lens import Lens
from precompute.encoders.train_world_lens import detectability, image_tokens, world_images
from precompute.encoders.world_encoder import SHIPPED_WEIGHTS, WorldEnergyModel
from precompute.sae import build_sae
from precompute.sae.train import TrainConfig, train_sae

def summary(scores: dict) -> dict:
    return {"undetected": scores["undetected"], "min_auroc": round(scores["min_auroc"], 3),
            "mean_auroc": round(scores["mean_auroc"], 3),
            "below_0.95": {r["world_concept"]: r["auroc"] for r in scores["table"] if r["auroc"] < 0.95}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--layouts", default="trunk,heads,families")
    parser.add_argument("--configs", default="64:8:10,64:2:15,128:2:15",
                        help="[variant/]concepts:k:epochs, comma-separated (variant: topk unless given)")
    parser.add_argument("--sae-seeds", default="0")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train_images, _, _ = world_images(1002, args.train)
    test_images, presence, names = world_images(1003, args.test)
    for layout in args.layouts.split(","):
        model = WorldEnergyModel(SHIPPED_WEIGHTS, readout="trunk" if layout == "trunk" else "heads")
        groups = model.token_groups if layout == "families" else None
        train, test = image_tokens(model, train_images), image_tokens(model, test_images)
        if layout != "trunk":
            oracle = summary(detectability(test.sum(dim=1).numpy(), presence, names))
            print(json.dumps({"layout": layout, "sae": "oracle (each coordinate summed)", **oracle}), flush=True)
        rows = training_rows(train, groups)
        for entry in args.configs.split(","):
            variant, _, shape = entry.rpartition("/")
            n_concepts, k, epochs = (int(v) for v in shape.split(":"))
            for seed in (int(s) for s in args.sae_seeds.split(",")):
                torch.manual_seed(seed)
                sae = build_sae(variant or "topk", input_dim=rows.shape[-1], n_concepts=n_concepts, k=k)
                report = train_sae(sae, rows, TrainConfig(batch_size=4096 if groups is not None else 1024,
                                                          epochs=epochs, lr=5e-4, seed=seed, log_every=10 ** 9,
                                                          checkpoint_every=10 ** 9))
                with torch.no_grad():
                    if groups is None:
                        codes = [sae.encode_codes(chunk) for chunk in test.split(100)]
                    else:  # as the lens computes them: each token split by family, a position's codes summed
                        lens = Lens.from_parts(model, sae, patch_tokens_only=False)
                        codes = [lens.token_codes(chunk) for chunk in test.split(100)]
                    energies = torch.cat([c.sum(dim=1) for c in codes]).numpy()
                print(json.dumps({"layout": layout, "sae": f"{variant or 'topk'} {n_concepts} concepts, k {k}, "
                                                          f"{epochs} epochs, seed {seed}",
                                  "explained_variance": round(float(report.final.get("explained_variance")), 4),
                                  **summary(detectability(energies, presence, names)),
                                  "seconds": round(time.perf_counter() - started)}), flush=True)


if __name__ == "__main__":
    main()
