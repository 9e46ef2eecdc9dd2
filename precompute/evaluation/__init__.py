"""Scoring atlases against known truth: the embedded world's ground truth, randomised worlds, the lens's
stability across SAE seeds, and the broken-lens controls every metric must fail on."""

from precompute.evaluation.stability import evaluate_stability
from precompute.evaluation.world import WorldEvaluation, evaluate_world, json_safe

__all__ = ["WorldEvaluation", "evaluate_stability", "evaluate_world", "json_safe"]
