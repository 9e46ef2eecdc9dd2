"""Benchmark: one concept card, in process, split into its data and its HTML.

Builds the synthetic atlas of ``analysis_views_bench.py`` (32,000 concepts, 10,000 pairs,
four generators) or opens an atlas you built, reads the card index into memory as the
server does at start, then for random (concept, model) pairs times

- data: ``concept_card`` (the card's dict from the in-memory tables);
- HTML: ``card_page_data`` (the activation histogram's SVG and the repeated parts, timed
  on their own as well) and the ``_concept_card.html`` fragment rendered by Jinja, what
  the explorer swaps in on a click.

No HTTP, no server: the numbers are the card's own cost, the part the code decides
(``explorer_bench.py`` measures the card under 20 clients over loopback).

    python bench/card_html_bench.py [--concepts 32000] [--items 10000] [--cards 2000]
    python bench/card_html_bench.py --atlas demo-atlas --cards 2000

Target: card HTML <= 0.5 ms (median).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

from analysis_views_bench import atlas_parser, on_atlas
from app.render import templates
from backend.atlas import Atlas
from backend.explorer import Explorer
from backend.labels import LabelStore, lens_identity
from backend.views.concept import card_page_data, concept_card


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(root: Path, cards: int, seed: int = 0) -> None:
    atlas = Atlas(root)
    try:
        with tempfile.TemporaryDirectory() as labels:
            explorer = Explorer(atlas, LabelStore(Path(labels) / "labels.json", lens_identity(atlas.root, atlas.info())))
            start = time.perf_counter()
            explorer.cards.get()
            print(f"card index read in {time.perf_counter() - start:.2f} s ({explorer.n_concepts} concepts)")
            template = templates().env.get_template("_concept_card.html")  # the server's templates
            rng = random.Random(seed)
            models = explorer.models()
            data_ms, parts_ms, html_ms, sizes = [], [], [], []
            for _ in range(cards):
                concept, model = rng.randrange(explorer.n_concepts), rng.choice(models)
                start = time.perf_counter()
                card = concept_card(explorer, concept, model)
                built = time.perf_counter()
                page = card_page_data(card)
                parted = time.perf_counter()
                html = template.render(run_name="", **page)
                done = time.perf_counter()
                data_ms.append(1000 * (built - start))
                parts_ms.append(1000 * (parted - built))
                html_ms.append(1000 * (done - built))
                sizes.append(len(html))
    finally:
        atlas.close()
    print("| cards | data median / p95 | of the HTML: its parts built in Python | HTML median / p95 | fragment |")
    print("| ---: | --- | --- | --- | ---: |")
    print(f"| {cards} | {statistics.median(data_ms):.3f} / {percentile(data_ms, 0.95):.3f} ms | "
          f"{statistics.median(parts_ms):.3f} / {percentile(parts_ms, 0.95):.3f} ms | "
          f"{statistics.median(html_ms):.3f} / {percentile(html_ms, 0.95):.3f} ms | "
          f"{statistics.median(sizes) / 1024:.1f} KB |")


def main() -> None:
    parser = atlas_parser(__doc__)
    parser.add_argument("--cards", type=int, default=2000)
    args = parser.parse_args()
    on_atlas(args, lambda atlas: measure(atlas, args.cards))


if __name__ == "__main__":
    main()
