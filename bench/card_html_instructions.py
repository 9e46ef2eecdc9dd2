"""Benchmark: instructions per concept card HTML, a count that does not drift with the machine's load.

``card_html_bench.py`` times the card; on a shared machine the same code gives medians 50% apart from one run to
the next. This script counts what the CPU executes instead: it takes ``--cards`` random cards of the synthetic
atlas (``analysis_views_bench.py``) or of an atlas you built, then runs, under ``valgrind --tool=callgrind``, a
child that renders their HTML (``card_page_data`` and ``_concept_card.html`` with the server's templates)
``--repeats`` times, and a child that renders none, and reports the difference per card.

    python bench/card_html_instructions.py [--cards 50] [--repeats 10]
    python bench/card_html_instructions.py --atlas demo-atlas

Needs valgrind (``apt install valgrind``); about two minutes at the defaults.
"""

from __future__ import annotations

import pickle
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from analysis_views_bench import atlas_parser, on_atlas
from backend.atlas import Atlas
from backend.explorer import Explorer
from backend.labels import LabelStore, lens_identity
from backend.views.concept import concept_card

CHILD = """
import pickle, sys
from app.render import templates
from backend.views.concept import card_page_data
cards = pickle.load(open(sys.argv[1], "rb"))
template = templates().env.get_template("_concept_card.html")
for card in cards[:5]:  # compile the template and warm the caches in both runs
    template.render(run_name="", **card_page_data(card))
for _ in range(int(sys.argv[2])):
    for card in cards:
        template.render(run_name="", **card_page_data(card))
"""


def instructions(script: Path, cards: Path, repeats: int) -> int:
    """Instructions the child executes (callgrind's ``Collected`` count)."""
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                           str(script), str(cards), str(repeats)], capture_output=True, text=True, check=True)
    return int(re.search(r"Collected\s*:\s*(\d+)", done.stderr).group(1))


def measure(root: Path, n_cards: int, repeats: int, seed: int = 0) -> None:
    atlas = Atlas(root)
    try:
        with tempfile.TemporaryDirectory() as temp:
            explorer = Explorer(atlas, LabelStore(Path(temp) / "labels.json", lens_identity(atlas.root, atlas.info())))
            rng, models = random.Random(seed), explorer.models()
            cards = [concept_card(explorer, rng.randrange(explorer.n_concepts), rng.choice(models))
                     for _ in range(n_cards)]
            (Path(temp) / "cards.pkl").write_bytes(pickle.dumps(cards))
            (Path(temp) / "child.py").write_text(CHILD)
            args = (Path(temp) / "child.py", Path(temp) / "cards.pkl")
            per_card = (instructions(*args, repeats) - instructions(*args, 0)) / (n_cards * repeats)
    finally:
        atlas.close()
    print(f"{n_cards} cards x {repeats} renders: {per_card / 1e6:.2f} M instructions per card HTML")


def main() -> None:
    parser = atlas_parser(__doc__)
    parser.add_argument("--cards", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt install valgrind)")
    on_atlas(args, lambda atlas: measure(atlas, args.cards, args.repeats))


if __name__ == "__main__":
    main()
