"""bench/levels.py: the sweeps it times are the kernel's, on the working sets it names."""

import numpy as np
import pytest

from helpers import load_bench, rel_err

levels = load_bench("investigations/levels")


def test_fma_loop_adds_every_term():
    for terms in (1, 7, 1000):
        x = np.random.default_rng(terms).uniform(0.5, 1.5, 32)
        lanes = 8
        expected = x[:lanes] + 5 * terms * (x[lanes:2 * lanes] * x[2 * lanes:3 * lanes])
        levels.fma_loop(x, terms)
        np.testing.assert_allclose(x[3 * lanes:], expected, rtol=1e-12)


@pytest.mark.parametrize("direction", ["up", "down"])
def test_working_sets_fit_their_level(direction):
    for m in (64, 256, 1024):
        sets = {name: shape for name, *shape in levels.working_sets(m, 8, direction)}
        assert list(sets) == ["L1", "layer", "memory"]
        layers, rows, columns = sets["L1"]
        assert layers == 1
        if direction == "down" and m <= 256:  # swept by columns: whole strips of all rows
            assert rows == m and columns % 8 == 0 and rows * columns * 8 <= levels.L1_BYTES
        else:  # whole rows, at least a row tile
            assert columns == m and rows >= levels.tuning.ROW_TILE
            assert rows * m * 8 <= max(levels.L1_BYTES, levels.tuning.ROW_TILE * m * 8)
        assert sets["layer"] == [1, m, m]
        layers, rows, columns = sets["memory"]
        assert rows == columns == m and layers * m * m * 8 >= levels.MEMORY_BYTES // 2


@pytest.mark.parametrize("m", [24, 256])  # down_cols at both: m = 24 leaves columns after the strips, m = 256 is padded
def test_sweeps_do_what_the_kernel_does(m):
    """One sweep of each direction: its chains are the products with the old and the updated layer."""
    layers, rows = 2, 8
    up, down = levels.make_sweeps(m, layers, rows, np.float64, seed=m)
    V_up, A_in, A_out, C, M = up
    V0 = V_up.copy()
    levels.sweep_up(*up, 1)
    step = levels.ALPHA * C.T @ M
    for i in range(layers):
        assert rel_err(V_up[i], V0[i] + step) < 1e-12
    n = A_in.shape[0] // 2
    # A_out holds the last layer's chains: the old one (r rows) and the new one.
    assert rel_err(A_out[:C.shape[0]], A_in[:C.shape[0]] @ V0[-1].T) < 1e-12
    assert rel_err(A_out[n:], A_in[n:] @ (V0[-1] + step).T) < 1e-12

    V_down, B_in, out, acc, C, M, by_columns = down
    assert by_columns
    V0 = V_down[:, :, :m].copy()
    pad = V_down[:, :, m:].copy()
    levels.sweep_down(*down, m, 1)
    step = levels.ALPHA * C.T @ M
    for i in range(layers):
        assert rel_err(V_down[i, :, :m], V0[i] + step) < 1e-12
    assert np.array_equal(V_down[:, :, m:], pad)
    dy = B_in.shape[0] // 2
    assert rel_err(out[:dy], B_in[:dy] @ V0[-1]) < 1e-12
    assert rel_err(out[dy:], B_in[dy:] @ (V0[-1] + step)) < 1e-12


def test_sweep_down_by_rows():
    m, rows = 512, 8  # rows of 4 KiB: down_rows
    _, down = levels.make_sweeps(m, 1, rows, np.float64, seed=3)
    V_down, B_in, out, acc, C, M, by_columns = down
    assert not by_columns
    V0 = V_down[0].copy()
    levels.sweep_down(*down, m, 1)
    step = levels.ALPHA * C.T @ M
    dy = B_in.shape[0] // 2
    assert rel_err(V_down[0], V0 + step) < 1e-12
    assert rel_err(out[:dy], B_in[:dy] @ V0) < 1e-12
    assert rel_err(out[dy:], B_in[dy:] @ (V0 + step)) < 1e-12


def test_main_prints_both_passes_per_width(capsys, monkeypatch):
    monkeypatch.setattr(levels, "MEMORY_BYTES", 1 << 16)
    monkeypatch.setattr(levels, "CALL_SECONDS", 1e-4)
    monkeypatch.setattr(levels, "PEAK_TERMS", 1 << 10)
    levels.main(["--sizes", "32", "--rounds", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert "multiply-add peak" in lines[1]
    rows = [line.split() for line in lines[3:]]
    assert [row[:2] for row in rows] == [["32", "up"], ["32", "down"]]
    for row in rows:
        assert len(row) == 9 and all(float(rate) > 0 for rate in row[2:8:2])
        low, high = (float(x) for x in row[8].split("-"))
        assert 0 < low <= high


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--sizes", "a,b"], ["--sizes", "4"]])
def test_bad_arguments_stop_with_a_message(argv):
    with pytest.raises(SystemExit, match="levels.py"):
        levels.main(argv)
