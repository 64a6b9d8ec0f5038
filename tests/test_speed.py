"""The speed experiment (Huang et al. Fig. 4 on digits): schedule, presets, one run, summary, figure."""

import json
import math
from dataclasses import asdict

import numpy as np
import pytest

import fastlin
from fastlin.experiments.speed import (SpeedConfig, eval_schedule, format_speed_summary, lr_grid, run_speed,
                                       speed_preset, speed_summary, write_speed_summary)
from fastlin.mlp_plots import speed_figure


@pytest.mark.parametrize("max_steps", [0, 5, 10, 11, 300, 2000])
def test_eval_schedule_is_dense_then_geometric(max_steps):
    steps = eval_schedule(max_steps)
    assert steps[0] == 0 and steps[-1] == max_steps
    assert all(b > a for a, b in zip(steps, steps[1:]))
    assert steps[:11] == list(range(min(11, max_steps + 1)))
    # from step 10 on, each evaluation is at most ~20% (and one step) after the last
    assert all(b <= max(a + 1, math.ceil(a * 1.2)) for a, b in zip(steps[10:], steps[11:]))


def test_presets():
    quick = speed_preset("quick")
    shapes = {(c.depth, c.width) for c in quick}
    assert shapes == {(16, 128), (64, 128), (32, 64), (32, 256)}
    assert {c.init for c in quick} == {"gaussian", "orthogonal"}
    assert len({c.key for c in quick}) == len(quick)
    rates = sorted({c.lr for c in quick})
    assert rates[-1] == 10.0 and rates[0] == pytest.approx(1e-3)
    assert all(c.batch_size == 128 and c.sigma_w2 == 1.05 and c.sigma_b2 == 2.01e-5 and c.threshold == 0.5
               for c in quick)
    assert len(speed_preset("paper")) > len(quick)
    with pytest.raises(ValueError, match="preset"):
        speed_preset("huge")
    np.testing.assert_allclose(lr_grid([0, 10, 20]), [1.0, 0.1, 0.01])


def test_run_speed_record(rng):
    data = fastlin.digits(dtype=np.float32)[:2]
    config = SpeedConfig("orthogonal", 3, 16, 0.3, 1, max_steps=60)
    record = run_speed(config, data)
    json.dumps(record)  # a plain record
    assert record["config"]["init"] == "orthogonal" and record["key"] == config.key
    assert SpeedConfig.from_dict(record["config"]) == config
    acc = np.array(record["train_accuracy"])
    assert record["eval_steps"] == eval_schedule(60)[:len(acc)]
    if record["status"] == "reached":
        # tau: the first evaluation at or above the threshold, where the run stopped
        assert np.all(acc[:-1] < 0.5) and acc[-1] >= 0.5 and record["tau"] == record["eval_steps"][-1]
    else:
        assert record["tau"] is None and np.all(acc < 0.5)
    again = run_speed(config, data)
    assert again["train_accuracy"] == record["train_accuracy"]


def test_run_speed_reaches_the_threshold_on_digits():
    record = run_speed(SpeedConfig("orthogonal", 2, 32, 0.1, 0, max_steps=100))
    assert record["status"] == "reached" and 0 < record["tau"] <= 100


def test_run_speed_never_when_the_rate_is_too_small():
    record = run_speed(SpeedConfig("gaussian", 2, 16, 1e-6, 0, max_steps=20))
    assert record["tau"] is None and record["status"] == "completed" and record["steps_run"] == 20


def _record(init, depth, width, lr, seed, tau, max_steps=100):
    config = SpeedConfig(init, depth, width, lr, seed, max_steps=max_steps)
    return {"config": asdict(config), "key": config.key, "tau": tau}


def test_speed_summary_reads_medians_over_seeds():
    taus = {  # (init, lr): taus of three seeds
        ("gaussian", 1.0): [None, None, 5], ("gaussian", 0.1): [20, 30, None], ("gaussian", 0.01): [80, 90, 70],
        ("orthogonal", 1.0): [4, None, 6], ("orthogonal", 0.1): [8, 9, 10], ("orthogonal", 0.01): [60, 50, 55],
    }
    records = [_record(init, 32, 64, lr, s, t) for (init, lr), ts in taus.items() for s, t in enumerate(ts)]
    summary = speed_summary(records)
    gauss, orth = summary["gaussian/L32/m64"], summary["orthogonal/L32/m64"]
    assert gauss["tau_at_lr"] == {0.01: 80.0, 0.1: 30.0, 1.0: None}
    assert gauss["max_trainable_lr"] == 0.1 and gauss["min_tau"] == 30.0
    assert orth["tau_at_lr"] == {0.01: 55.0, 0.1: 9.0, 1.0: 6.0}
    assert orth["max_trainable_lr"] == 1.0 and orth["min_tau"] == 6.0
    assert gauss["seeds"] == 3 and (gauss["depth"], gauss["width"]) == (32, 64)
    never = speed_summary([_record("gaussian", 2, 8, 0.5, 0, None)])["gaussian/L2/m8"]
    assert never["max_trainable_lr"] is None and never["min_tau"] is None
    text = format_speed_summary(summary)
    assert "never" in text and "L = 32, m = 64" in text


def test_records_of_different_experiments_are_not_pooled(tmp_path):
    records = [_record("gaussian", 4, 8, 0.1, 0, 10), _record("gaussian", 4, 8, 0.1, 1, 20, max_steps=200)]
    with pytest.raises(ValueError, match="max_steps"):
        speed_summary(records)
    with pytest.raises(ValueError, match="max_steps"):
        speed_figure(records, tmp_path / "speed")


@pytest.mark.parametrize("change", [dict(depth=0), dict(width=-1), dict(max_steps=0), dict(batch_size=1.5),
                                    dict(threshold=0.0)])
def test_bad_speed_configs_raise(change):
    with pytest.raises(ValueError, match=next(iter(change))):
        SpeedConfig(**{**dict(init="gaussian", depth=4, width=8, lr=0.1, seed=0), **change})
    with pytest.raises(ValueError, match="max_steps"):
        eval_schedule(-1)


def test_summary_file_and_figure_from_records(tmp_path):
    records = [_record(init, d, w, lr, s, None if lr > 0.5 and init == "gaussian" else int(10 / lr) + s)
               for init in ("gaussian", "orthogonal") for d, w in ((8, 32), (16, 32), (8, 64))
               for lr in (1.0, 0.1, 0.01) for s in range(2)]
    summary = speed_summary(records)
    write_speed_summary(summary, tmp_path / "speed_summary.json")
    loaded = json.loads((tmp_path / "speed_summary.json").read_text())
    assert loaded["orthogonal/L8/m32"]["max_trainable_lr"] == 1.0
    assert loaded["gaussian/L8/m32"]["tau_at_lr"]["1.0"] is None
    paths = speed_figure(records, tmp_path / "speed")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError):
        speed_figure([], tmp_path / "empty")


def test_speed_study_runs_resumes_and_redraws(tmp_path):
    """The study layer runs the configurations, keeps them, and redraws without training."""
    from fastlin.experiments import get_study, run_study

    study = get_study("speed")
    first = run_study(study, "tiny", tmp_path, progress=False)
    configs = study.configs("tiny")
    assert first.done == len(configs) == 16 and first.failed == 0
    assert (tmp_path / "speed.png").is_file()
    summary = json.loads((tmp_path / "speed_summary.json").read_text())
    groups = {k: v for k, v in summary.items() if isinstance(v, dict) and "tau_at_lr" in v}
    assert len(groups) == 4 and all({"max_trainable_lr", "min_tau", "tau_at_lr"} <= set(v) for v in groups.values())
    config = configs[5]
    direct = run_speed(SpeedConfig.from_dict(config), backend=config["backend"])
    from fastlin.experiments.study import StudyStore

    (record,) = StudyStore(tmp_path).load_configs("speed", [config])
    assert record["tau"] == direct["tau"]
    np.testing.assert_array_equal(record["train_accuracy"], direct["train_accuracy"])
    again = run_study(study, "tiny", tmp_path, progress=False)
    assert again.done == 0 and again.skipped == 16
