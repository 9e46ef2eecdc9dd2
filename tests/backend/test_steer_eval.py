"""The steering evaluation's arithmetic on planned outcomes: raised rate, mean change, specificity, dose-response,
failures, and the report's stable keys (no model needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.steering.evaluation import Outcome, Plan, SteerEvalSettings, Steer, dose_response, report, summary


def outcome(arm, strength, baseline, steered, others, concept=4, seed=0, reason=None):
    steer = Steer(concept, arm, strength, "a red circle", seed, (1, 2))
    if reason:
        return Outcome(steer, reason=reason)
    return Outcome(steer, baseline, steered, others)


def test_summary_counts_raised_steers_and_the_specificity():
    found = summary([outcome("attributed", 2, 0.0, 3.0, 1.0), outcome("attributed", 2, 1.0, 0.5, 0.5),
                     outcome("attributed", 2, 0.0, 0.0, 0.0, reason="SteeringTimeout: past the limit")])
    assert found["trials"] == 2 and found["failed"] == 1
    assert found["raised"] == 0.5 and found["mean_change"] == pytest.approx(1.25)
    assert found["median_change"] == pytest.approx(1.25)
    assert found["others_mean_abs_change"] == pytest.approx(0.75)
    assert found["specificity"] == pytest.approx(1.25 / 0.75)


def test_a_generator_on_which_steering_has_no_effect_scores_nothing():
    # the control a metric must fail: steered images identical to the baselines
    still = summary([outcome("attributed", 2, 1.0, 1.0, 0.0) for _ in range(4)])
    assert still["raised"] == 0.0 and still["mean_change"] == 0.0 and still["specificity"] is None
    # a steer that moves every concept alike is not specific
    blunt = summary([outcome("attributed", 2, 1.0, 2.0, 1.0) for _ in range(4)])
    assert blunt["raised"] == 1.0 and blunt["specificity"] == pytest.approx(1.0)
    assert summary([]) == {"trials": 0, "failed": 0, "raised": None, "mean_change": None, "median_change": None,
                           "others_mean_abs_change": None, "specificity": None}


def test_the_dose_response_and_the_report_keep_their_keys_and_list_failures():
    settings = SteerEvalSettings(concepts=1, features=2, strength=2.0, doses=(1.0, 4.0), seeds=(0, 1), prompts=1)
    assert settings.strengths == (1.0, 2.0, 4.0)
    outcomes = [outcome(arm, s, 0.0, s * (2.0 if arm == "attributed" else -0.5), 0.5, seed=seed)
                for s in settings.strengths for arm in ("attributed", "control") for seed in (0, 1)]
    outcomes[-1] = outcome("control", 4.0, 0, 0, 0, seed=1, reason="SteeringTimeout: generation stopped")
    doses = dose_response(outcomes, settings.strengths)
    assert [d["strength"] for d in doses] == [1.0, 2.0, 4.0]
    assert [d["attributed"]["mean_change"] for d in doses] == [2.0, 4.0, 8.0]  # rises with the strength
    assert doses[2]["control"]["trials"] == 1 and doses[2]["control"]["failed"] == 1
    plan = Plan({"concept": 4, "label": "circle", "delta": 0.01}, {"positives": 30, "auroc": 0.8}, ["a red circle"],
                {"attributed": [1, 2], "control": [7, 9]})
    result = json.loads(json.dumps(report("world-model", settings, [plan], [], outcomes)))  # valid JSON
    assert result["steers"] == {"planned": 12, "done": 11, "failed": 1}
    assert result["failures"] == [{"concept": 4, "arm": "control", "strength": 4.0, "prompt": "a red circle",
                                   "seed": 1, "features": [1, 2], "reason": "SteeringTimeout: generation stopped"}]
    overall = result["overall"]
    assert overall["attributed"]["trials"] == overall["control"]["trials"] == 2  # the headline strength only
    assert overall["attributed"]["raised"] == 1.0 and overall["control"]["raised"] == 0.0
    assert overall["raised_ratio"] is None  # the control never rose: no finite ratio
    row = result["concepts"][0]
    assert row["probe_auroc"] == 0.8 and row["attributed"]["features"] == [1, 2]
    assert row["attributed"]["specificity"] == pytest.approx(4.0 / 0.5)
    empty = report("world-model", settings, [], [], [], "no concept flagged suppressed")
    assert empty["error"] and empty["steers"] == {"planned": 0, "done": 0, "failed": 0}
    assert {"raised", "mean_change", "trials"} <= set(empty["overall"]["attributed"]) & set(empty["overall"]["control"])


def test_bad_settings_are_refused():
    from precompute.errors import ConfigError

    with pytest.raises(ConfigError, match="timeout_s"):
        SteerEvalSettings(timeout_s=0)
    with pytest.raises(ConfigError, match="seeds non-empty"):
        SteerEvalSettings(seeds=())
    assert np.isfinite(SteerEvalSettings().strength)
