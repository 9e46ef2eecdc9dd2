"""Which flag rule holds on worlds nobody tuned for: re-score built world atlases under other rules.

    .venv/bin/python bench/world_flag_rules.py OUT/world-*/atlas [--floors 0,0.3] [--relative 0.3,0.4,0.5]

``OUT`` is the ``--out`` folder of ``blindspot eval world --random-plants N --seeds ... --out OUT``. Each atlas
is copied to a temporary folder, its ``concept_stats`` flags rewritten, and scored by ``eval world``'s own
``evaluate_world`` (recall, false alarms, null flags of the no-effect control). The statistics (delta, q-values)
are the atlas's; only the rule that turns them into flags changes:

- ``floor F``: the shipped rule: the paper's delta thresholds, q <= fdr, and |E_gen - E_real| >= F E_real
  (``analysis.min_change``; F = 0 is the paper's rule with the test);
- ``relative C``: no single temperature: a flag needs |E_gen - E_real| >= C E_real and q <= fdr, which is
  delta with a temperature per concept, T_k = C E_real / ln 9, at the same thresholds.

Spearman is not re-scored: delta with T_k is monotone in the relative change, so its Spearman is ``eval world``'s
``spearman_relative``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import duckdb
import numpy as np

from precompute.evaluation.world import evaluate_world

FLOOR = ("suppressed = suppressed_paper AND coalesce(q_value, 1) <= ? AND (e_real - e_gen) >= ? * e_real, "
         "exaggerated = exaggerated_paper AND coalesce(q_value, 1) <= ? AND (e_gen - e_real) >= ? * e_real")
RELATIVE = ("suppressed = coalesce(q_value, 1) <= ? AND e_real > 0 AND (e_real - e_gen) >= ? * e_real, "
            "exaggerated = coalesce(q_value, 1) <= ? AND (e_gen - e_real) >= ? * greatest(e_real, 1e-9)")


def rescore(atlases: list[Path], rule: str, value: float) -> dict:
    recall, false_alarms, flags, alarms, nulls, missed = [], [], 0, 0, 0, []
    for atlas in atlases:
        with tempfile.TemporaryDirectory() as temp:
            copy = Path(temp) / "atlas"
            copy.mkdir()
            shutil.copy(atlas / "atlas.duckdb", copy / "atlas.duckdb")
            with duckdb.connect(str(copy / "atlas.duckdb")) as db:
                config = db.execute("SELECT value FROM atlas_info WHERE key = 'config'").fetchone()[0]
                fdr = float(json.loads(config)["analysis"]["fdr"])  # the atlas's own, as evaluate_world reads it
                db.execute(f"UPDATE concept_stats SET {rule}", [fdr, value, fdr, value])
            for g in evaluate_world(copy).generators:
                if g.control:
                    nulls += g.flagged
                    continue
                recall.append(g.recall)
                false_alarms.append(g.false_alarm_rate or 0.0)
                flags, alarms = flags + g.flagged, alarms + g.false_alarms
                missed += [f"{atlas.parent.name}/{g.source_id}: {m}" for m in g.missed]
    return {"recall": recall, "false_alarms": false_alarms, "flags": flags, "alarms": alarms, "nulls": nulls,
            "missed": missed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("atlases", nargs="+", type=Path)
    parser.add_argument("--floors", default="0,0.3")
    parser.add_argument("--relative", default="0.3,0.4,0.5")
    args = parser.parse_args()
    rules = ([("floor", FLOOR, float(v)) for v in args.floors.split(",") if v]
             + [("relative", RELATIVE, float(v)) for v in args.relative.split(",") if v])
    print("| rule | recall mean / worst | false alarms mean / worst | flags (false) | null flags |")
    print("| --- | --- | --- | ---: | ---: |")
    for name, rule, value in rules:
        r = rescore(args.atlases, rule, value)
        print(f"| {name} {value:g} | {np.mean(r['recall']):.2f} / {np.min(r['recall']):.2f} | "
              f"{np.mean(r['false_alarms']):.2f} / {np.max(r['false_alarms']):.2f} | {r['flags']} ({r['alarms']}) | "
              f"{r['nulls']} |")


if __name__ == "__main__":
    main()
