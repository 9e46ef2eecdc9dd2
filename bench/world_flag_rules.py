"""Which flag rule holds on worlds nobody tuned for: re-score built world atlases under other rules.

    .venv/bin/python bench/world_flag_rules.py OUT/world-*/atlas [--floors 0,0.3] [--relative 0.3,0.4,0.5]
        [--rules 0.3:1:none,0.4:0.5:0.1]

``OUT`` is the ``--out`` folder of ``blindspot eval world --random-plants N --seeds ... --out OUT``. Each atlas
is copied to a temporary folder, its ``concept_stats`` flags rewritten, and scored by ``eval world``'s own
``evaluate_world`` (recall, false alarms, null flags of the no-effect control). The statistics (delta, q-values)
are the atlas's; only the rule that turns them into flags changes:

- ``floor F``: the shipped rule: the paper's delta thresholds, q <= fdr, and |E_gen - E_real| >= F E_real
  (``analysis.min_change``; F = 0 is the paper's rule with the test);
- ``rule F:s:q``: the shipped rule with ``analysis.auto_share = s`` (T rescaled from the atlas's by s / its
  own share, delta recomputed with it) and ``analysis.baseline_quantile = q`` (``none``: the floor of E_real), so
  ``F:1:none`` is ``floor F`` on an atlas built with the defaults;
- ``relative C``: no single temperature: a flag needs |E_gen - E_real| >= C E_real and q <= fdr, which is
  delta with a temperature per concept, T_k = C E_real / ln 9, at the same thresholds.

Spearman is re-scored only under ``rule`` (delta recomputed; a rescaled T changes no rank unless a delta
saturates): delta with T_k is monotone in the relative change, so its Spearman is ``eval world``'s
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
import scipy.sparse as sp

from precompute.analysis.delta import column_quantiles
from precompute.evaluation.world import evaluate_world

FLOOR = ("suppressed = suppressed_paper AND coalesce(q_value, 1) <= ? AND (e_real - e_gen) >= ? * e_real, "
         "exaggerated = exaggerated_paper AND coalesce(q_value, 1) <= ? AND (e_gen - e_real) >= ? * e_real")
RELATIVE = ("suppressed = coalesce(q_value, 1) <= ? AND e_real > 0 AND (e_real - e_gen) >= ? * e_real, "
            "exaggerated = coalesce(q_value, 1) <= ? AND (e_gen - e_real) >= ? * greatest(e_real, 1e-9)")


def _baselines(db: duckdb.DuckDBPyConnection, quantile: float) -> list[tuple[int, float]]:
    """Each concept's ``quantile`` of its energy over the real images, zeros included (the analyze stage's
    ``column_quantiles``)."""
    n = db.execute("SELECT count(*) FROM images WHERE source_id = 'real'").fetchone()[0]
    row, concept, energy = (np.asarray(v) for v in zip(*db.execute(
        "SELECT dense_rank() OVER (ORDER BY image_id) - 1, concept, energy FROM energies "
        "WHERE source_id = 'real'").fetchall()))
    width = int(concept.max()) + 1
    baseline = column_quantiles(sp.csr_array((energy, (row, concept)), shape=(n, width)), quantile)
    return [(k, float(baseline[k])) for k in range(width)]


def _shipped_rule(db: duckdb.DuckDBPyConnection, fdr: float, floor: float, share: float,
                  quantile: float | None) -> None:
    """Rewrite delta and the flags as the analyze stage would with ``min_change = floor``, ``auto_share = share``
    and ``baseline_quantile = quantile``."""
    analysis = json.loads(db.execute("SELECT value FROM atlas_info WHERE key = 'config'").fetchone()[0])["analysis"]
    built = float(db.execute("SELECT value FROM atlas_info WHERE key = 'temperature'").fetchone()[0])
    temperature = built * share / float(analysis.get("auto_share", 1.0))
    db.execute("CREATE TEMP TABLE baseline (concept INTEGER, b DOUBLE)")
    if quantile is not None:
        db.executemany("INSERT INTO baseline VALUES (?, ?)", _baselines(db, quantile))
    db.execute("UPDATE concept_stats SET delta = 1 / (1 + exp(-greatest(least((e_gen - e_real) / ?, 700), -700)))",
               [temperature])
    above = "greatest(e_real - coalesce((SELECT b FROM baseline WHERE baseline.concept = s.concept), 0), 0)"
    crossing = temperature * float(np.log(9.0))  # delta < 0.1 (> 0.9) is a change past T ln 9
    db.execute(f"""UPDATE concept_stats s SET
                   suppressed = coalesce(q_value, 1) <= ? AND e_real - e_gen > ? AND e_real - e_gen >= ? * {above},
                   exaggerated = coalesce(q_value, 1) <= ? AND e_gen - e_real > ? AND e_gen - e_real >= ? * {above}""",
               [fdr, crossing, floor, fdr, crossing, floor])


def rescore(atlases: list[Path], rule: str, value) -> dict:
    recall, false_alarms, flags, alarms, nulls, missed, spearman = [], [], 0, 0, 0, [], []
    for atlas in atlases:
        with tempfile.TemporaryDirectory() as temp:
            copy = Path(temp) / "atlas"
            copy.mkdir()
            shutil.copy(atlas / "atlas.duckdb", copy / "atlas.duckdb")
            with duckdb.connect(str(copy / "atlas.duckdb")) as db:
                config = db.execute("SELECT value FROM atlas_info WHERE key = 'config'").fetchone()[0]
                fdr = float(json.loads(config)["analysis"]["fdr"])  # the atlas's own, as evaluate_world reads it
                if rule == "shipped":
                    _shipped_rule(db, fdr, *value)
                else:
                    db.execute(f"UPDATE concept_stats SET {rule}", [fdr, value, fdr, value])
            for g in evaluate_world(copy).generators:
                if g.control:
                    nulls += g.flagged
                    continue
                recall.append(g.recall)
                spearman.append(g.spearman)
                false_alarms.append(g.false_alarm_rate or 0.0)
                flags, alarms = flags + g.flagged, alarms + g.false_alarms
                missed += [f"{atlas.parent.name}/{g.source_id}: {m}" for m in g.missed]
    return {"recall": recall, "false_alarms": false_alarms, "flags": flags, "alarms": alarms, "nulls": nulls,
            "missed": missed, "spearman": [v for v in spearman if v is not None]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("atlases", nargs="+", type=Path)
    parser.add_argument("--floors", default="0,0.3")
    parser.add_argument("--relative", default="0.3,0.4,0.5")
    parser.add_argument("--rules", default="", help="F:s:q triples (floor, auto share, baseline quantile or none)")
    args = parser.parse_args()
    rules = ([("floor", FLOOR, float(v)) for v in args.floors.split(",") if v]
             + [("relative", RELATIVE, float(v)) for v in args.relative.split(",") if v])
    for text in filter(None, args.rules.split(",")):
        floor, share, quantile = text.split(":")
        rules.append(("rule", "shipped", (float(floor), float(share), None if quantile == "none" else float(quantile))))
    print("| rule | recall mean / worst | false alarms mean / worst | flags (false) | null flags | Spearman mean / worst |")
    print("| --- | --- | --- | ---: | ---: | --- |")
    for name, rule, value in rules:
        r = rescore(args.atlases, rule, value)
        shown = ":".join("none" if v is None else f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"
        rho = (f"{np.mean(r['spearman']):.2f} / {np.min(r['spearman']):.2f}" if rule == "shipped" and r["spearman"]
               else "")
        print(f"| {name} {shown} | {np.mean(r['recall']):.2f} / {np.min(r['recall']):.2f} | "
              f"{np.mean(r['false_alarms']):.2f} / {np.max(r['false_alarms']):.2f} | {r['flags']} ({r['alarms']}) | "
              f"{r['nulls']} | {rho} |")


if __name__ == "__main__":
    main()
