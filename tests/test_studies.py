"""experiments.study (the generic resumable layer) and the NTK studies on their tiny presets."""

import json
import math
import threading

import numpy as np
import pytest

from fastlin.cli import main
from fastlin.experiments import study as st

CALLS = []
_lock = threading.Lock()


def toy_run(config):
    with _lock:
        CALLS.append(config["x"])
    if config.get("fail"):
        raise RuntimeError(f"configured to fail at x = {config['x']}")
    x = config["x"]
    return {"square": np.arange(x) ** 2, "flags": np.array([True, False]), "f32": np.ones(2, np.float32),
            "x": x, "half": x / 2, "big": np.int64(x) * 10**12, "ok": np.bool_(True), "name": f"n{x}",
            "nothing": None, "nan": math.nan}


def toy_summary(records):
    return {"total": int(sum(r["x"] for r in records)), "count": len(records)}


def toy_plot(records, out):
    path = out / "toy.txt"
    path.write_text(",".join(str(r["x"]) for r in records))
    return [path]


TOY = st.register_study(st.Study(
    name="toy-study", description="a test study",
    presets={"small": lambda: [{"x": x, "tag": "a"} for x in (1, 2, 3)],
             "broken": lambda: [{"x": 4}, {"x": 5, "fail": True}],
             "twice": lambda: [{"x": 1}, {"x": 1}],
             "tuple": lambda: [{"x": (1, 2)}]},
    run=toy_run, summarize=toy_summary, plot=toy_plot, cost=lambda c: float(c["x"]),
    format_summary=lambda s: f"total {s['total']}"))


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()


def test_run_stores_records_that_round_trip_and_reruns_skip_them(tmp_path):
    run = st.run_study("toy-study", "small", tmp_path, workers=2, progress=False)
    assert (run.done, run.skipped, run.failed) == (3, 0, 0)
    assert sorted(CALLS) == [1, 2, 3]
    assert run.summary["total"] == 6 and run.summary["runs"] == {"expected": 3, "finished": 3, "missing": 0}
    assert run.summary["missing"] == []
    assert json.loads((tmp_path / "toy-study_summary.json").read_text())["total"] == 6
    assert (tmp_path / "toy.txt").read_text() == "1,2,3"
    spec = json.loads((tmp_path / "study.json").read_text())
    assert spec["study"] == "toy-study" and spec["preset"] == "small" and len(spec["configs"]) == 3

    store = st.StudyStore(tmp_path)
    [record] = store.load_configs("toy-study", [{"x": 3, "tag": "a"}])
    assert record.config == {"x": 3, "tag": "a"} and record.seconds >= 0 and record.host
    np.testing.assert_array_equal(record["square"], [0, 1, 4])
    assert record["square"].dtype == np.arange(3).dtype
    assert record["flags"].dtype == bool and record["f32"].dtype == np.float32
    assert record["x"] == 3 and type(record["x"]) is int
    assert record["half"] == 1.5 and record["big"] == 3 * 10**12 and record["ok"] is True
    assert record["name"] == "n3" and record["nothing"] is None and math.isnan(record["nan"])

    CALLS.clear()
    again = st.run_study(TOY, "small", tmp_path, progress=False)
    assert (again.done, again.skipped) == (0, 3) and CALLS == []
    forced = st.run_study(TOY, "small", tmp_path, force=True, progress=False)
    assert forced.done == 3 and sorted(CALLS) == [1, 2, 3]


def test_a_failing_configuration_is_reported_not_stored_and_retried(tmp_path, capsys):
    run = st.run_study(TOY, "broken", tmp_path, workers=1, progress=False)
    assert run.done == 1 and run.failed == 1
    assert "configured to fail at x = 5" in run.failures[0].error
    assert "failed: toy-study" in capsys.readouterr().err
    CALLS.clear()
    st.run_study(TOY, "broken", tmp_path, workers=1, progress=False)
    assert CALLS == [5]


def test_ids_depend_on_the_study_and_the_configuration_not_on_key_order():
    a = st.config_id("toy-study", {"x": 1, "tag": "a"})
    assert a == st.config_id("toy-study", {"tag": "a", "x": 1})
    assert a != st.config_id("other", {"x": 1, "tag": "a"})
    assert a != st.config_id("toy-study", {"x": 2, "tag": "a"})
    assert len(a) == 16


def test_bad_names_presets_and_configurations_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown study 'nope'; choose one of .*ntk-width"):
        st.get_study("nope")
    with pytest.raises(ValueError, match="unknown preset 'huge' of study 'toy-study'; choose one of small"):
        st.run_study(TOY, "huge", tmp_path)
    with pytest.raises(ValueError, match="lists a configuration twice"):
        TOY.configs("twice")
    with pytest.raises(TypeError, match="does not survive JSON"):
        TOY.configs("tuple")
    with pytest.raises(TypeError, match="not JSON-able"):
        st.canonical({"x": np.float32(1)})
    with pytest.raises(ValueError, match="workers must be"):
        st.run_study(TOY, "small", tmp_path, workers=0)
    with pytest.raises(TypeError, match="result 'bad' must be numeric"):
        st._split_values({"bad": np.array(["a"])})
    with pytest.raises(TypeError, match="other than 'meta'"):
        st._split_values({"meta": 1})
    with pytest.raises(FileNotFoundError, match="holds no study"):
        st.redraw(tmp_path)


DAMAGES = {
    "truncated": lambda good, other: good[:100],
    "zero-byte": lambda good, other: b"",
    "random-bytes": lambda good, other: np.random.default_rng(7).bytes(len(good)),
    "other-config": lambda good, other: other,
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_record_is_moved_aside_reported_and_recomputed(tmp_path, damage, capsys):
    st.run_study(TOY, "small", tmp_path / "clean", progress=False)
    out = tmp_path / "damaged"
    st.run_study(TOY, "small", out, progress=False)
    store = st.StudyStore(out)
    victim_config = {"x": 2, "tag": "a"}
    victim = store.path(st.config_id("toy-study", victim_config))
    other = store.path(st.config_id("toy-study", {"x": 3, "tag": "a"})).read_bytes()
    bad = DAMAGES[damage](victim.read_bytes(), other)
    victim.write_bytes(bad)
    leftover = store.records / f"abc.npz{st.TMP_MARK}999999999-deadbeef"
    leftover.write_bytes(b"partial")
    CALLS.clear()
    capsys.readouterr()
    run = st.run_study(TOY, "small", out, progress=False)
    assert CALLS == [2] and (run.done, run.skipped) == (1, 2)
    assert [d.record_id for d in run.damaged] == [victim.stem]
    assert ", 1 damaged, rerun in" in run.line()
    assert f"damaged: {victim}" in capsys.readouterr().err
    kept = store.damaged_files()
    assert len(kept) == 1 and kept[0].read_bytes() == bad and kept[0].name.startswith(victim.stem)
    assert run.summary["runs"]["finished"] == 3 and run.summary["missing"] == []
    assert not leftover.exists()
    clean = st.StudyStore(tmp_path / "clean").load_configs("toy-study", TOY.configs("small"))
    again = store.load_configs("toy-study", TOY.configs("small"))
    assert len(again) == 3
    for a, b in zip(clean, again):
        assert a.config == b.config and a.values.keys() == b.values.keys()
        assert a["square"].tobytes() == b["square"].tobytes() and a["name"] == b["name"]


def test_a_study_with_a_hole_names_it_when_drawn(tmp_path, capsys):
    st.run_study(TOY, "small", tmp_path, progress=False)
    store = st.StudyStore(tmp_path)
    gone = st.config_id("toy-study", {"x": 1, "tag": "a"})
    store.path(gone).unlink()
    torn = store.path(st.config_id("toy-study", {"x": 3, "tag": "a"}))
    torn.write_bytes(torn.read_bytes()[:50])
    capsys.readouterr()
    assert main(["plot", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "incomplete: 2 of 3 configurations have no whole record (1 damaged, 1 missing)" in out
    assert '{"tag":"a","x":1}' in out and '{"tag":"a","x":3} (damaged)' in out
    assert 'toy-study_summary.json lists them under "missing"' in out
    summary = json.loads((tmp_path / "toy-study_summary.json").read_text())
    assert summary["total"] == 2 and summary["runs"] == {"expected": 3, "finished": 1, "missing": 2}
    assert [(m["id"], m["config"], m["problem"]) for m in summary["missing"]] == [
        (gone, {"x": 1, "tag": "a"}, "missing"), (torn.stem, {"x": 3, "tag": "a"}, "damaged")]
    assert torn.exists()  # drawing reads only; the next run moves it aside


def test_fastlin_plot_redraws_a_study_directory(tmp_path, capsys):
    st.run_study(TOY, "small", tmp_path, progress=False)
    (tmp_path / "toy.txt").unlink()
    assert main(["plot", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "toy-study: " in out and "total 6" in out
    assert (tmp_path / "toy.txt").read_text() == "1,2,3"


# -- the NTK studies, tiny presets -------------------------------------------------------------


@pytest.fixture
def png_only(monkeypatch):
    monkeypatch.setattr("fastlin.ntk_plots.FORMATS", ("png",))


def test_ntk_width_tiny(tmp_path, png_only):
    run = st.run_study("ntk-width", "tiny", tmp_path, workers=2, progress=False)
    assert run.done == 32 and run.failed == 0
    s = run.summary
    assert s["orthogonal_max_error_wide"] < 1e-12  # m = 32, 64 >= d_x = 24
    assert s["slope"]["gaussian"] < -0.2
    assert set(s["slope_by_depth"]["gaussian"]) == {"2", "4"}
    assert s["orthogonal_error_below_dx"]["orthogonal"]["L=2"]["8"] > 1e-3
    assert (tmp_path / "ntk-width.png").is_file()


def test_ntk_drift_tiny(tmp_path, png_only):
    run = st.run_study("ntk-drift", "tiny", tmp_path, workers=2, progress=False)
    assert run.done == 24 and run.failed == 0
    s = run.summary
    assert set(s["slope"]) == {"gaussian", "orthogonal"}
    assert s["steps_run_max"] <= 400
    assert s["median_ntk_drift"]["gaussian"]["L=2"]["16"] > 0
    records = st.StudyStore(tmp_path).load_configs("ntk-drift", st.get_study("ntk-drift").configs("tiny"))
    assert all(r["weight_drift"].shape == (r.config["depth"],) for r in records)
    assert (tmp_path / "ntk-drift.png").is_file()


def test_ntk_spectrum_tiny_and_the_cli(tmp_path, png_only, monkeypatch, capsys):
    study = st.get_study("ntk-spectrum")
    monkeypatch.setitem(study.presets, "quick", study.presets["tiny"])  # the CLI offers quick and paper
    out = tmp_path / "spectrum"
    assert main(["reproduce", "ntk-spectrum", "--preset", "quick", "--out", str(out), "--quiet",
                 "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "16 configurations: 16 done, 0 skipped" in printed and "ntk-spectrum:" in printed
    summary = json.loads((out / "ntk-spectrum_summary.json").read_text())
    row = summary["by_net"]["orthogonal L=4 m=16"]
    assert row["seeds"] == 2 and row["lambda_min_ratio_start"] == pytest.approx(1.0, rel=1e-10)
    assert (out / "ntk-spectrum.png").is_file()
    records = st.StudyStore(out).load_configs("ntk-spectrum", study.configs("tiny"))
    r = records[0]
    assert r["t"][0] == 0 and len(r["t"]) == len(r["lambda_min"]) == len(r["ntk_drift"])
    assert r["loss"].shape == (r.config["steps"] + 1,)
    assert main(["reproduce", "ntk-spectrum", "--preset", "quick", "--out", str(out), "--quiet"]) == 0
    assert "16 configurations: 0 done, 16 skipped" in capsys.readouterr().out


def test_cli_study_errors(tmp_path, capsys):
    assert main(["reproduce", "ntk-width", "--backend", "cpu", "--out", str(tmp_path)]) == 2
    assert "ntk-width trains nothing" in capsys.readouterr().err
    assert main(["reproduce", "ntk-drift", "--executor", "dask", "--out", str(tmp_path)]) == 2
    assert "runs in threads" in capsys.readouterr().err


def test_paper_preset_prints_its_estimate_first(tmp_path, capsys, monkeypatch):
    calls = []

    def fake(study, configs, *, workers):
        calls.append((study.name, len(configs), workers))
        return {"seconds": 5400.0, "configurations": len(configs), "workers": workers,
                "probe": configs[0], "probe_seconds": 2.0, "probe_record": None}

    monkeypatch.setattr("fastlin.experiments.study_cli.estimate_seconds", fake)
    assert main(["reproduce", "ntk-width", "--preset", "paper", "--estimate-only", "--workers", "2",
                 "--out", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert "estimated run time: 1 h 30 min with 2 worker(s)" in out
    assert calls == [("ntk-width", 2 * 7 * 9 * 10, 2)]
    assert not (tmp_path / "w").exists()


def test_estimate_scales_the_probe_by_the_cost_model(monkeypatch):
    def timed(study, config, threads):
        return st.StudyRecord(config=config, values=toy_run(config), seconds=2.0)

    monkeypatch.setattr(st, "run_config", timed)
    est = st.estimate_seconds(TOY, TOY.configs("small"), workers=2)
    # costs 1, 2, 3: half of the total (3) is reached at x = 2, which took 2 s
    assert est["probe"] == {"x": 2, "tag": "a"} and est["seconds"] == pytest.approx(3.0)
    assert est["probe_record"]["x"] == 2


def test_a_paper_run_keeps_the_probe_of_its_estimate(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(TOY.presets, "paper", TOY.presets["small"])
    assert main(["reproduce", "toy-study", "--preset", "paper", "--out", str(tmp_path), "--workers", "1",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.index("estimated run time") < out.index("3 configurations: 2 done, 1 skipped")
    assert sorted(CALLS) == [1, 2, 3]  # the probe (x = 2) ran once, in the estimate
