"""The grid rule (analysis/gridsearch.py): a choice at a grid edge extends the grid until it is interior."""

import math

import pytest

from analysis.gridsearch import BOUND, FIXED, INTERIOR, coordinate_search, point_key


def peaked(opt: dict, calls: list):
    """A stub objective: -sum of squared log-distances to `opt`; records every point it trains."""

    def score(p):
        calls.append(dict(p))
        return -sum(math.log(p[d] / opt[d]) ** 2 for d in p)

    return score


def test_optimum_beyond_the_grid_extends_it_until_interior_and_records_every_point():
    calls = []
    res = coordinate_search({"lr": [1e-3, 3e-3]}, peaked({"lr": 0.03}, calls))
    assert res.best == {"lr": pytest.approx(0.027)} and res.status == {"lr": INTERIOR}
    assert res.grids["lr"] == pytest.approx([1e-3, 3e-3, 9e-3, 0.027, 0.081])
    assert [p["lr"] for p, _ in res.tried] == pytest.approx([1e-3, 3e-3, 9e-3, 0.027, 0.081])
    assert len(calls) == res.new == 5  # each point trained once
    assert res.grids["lr"][2] == 9e-3  # extension values are clean numbers


def test_optimum_below_the_grid_extends_downward():
    res = coordinate_search({"gate_lr": [0.01, 0.03, 0.1, 0.3]}, peaked({"gate_lr": 0.004}, []))
    assert res.best["gate_lr"] == pytest.approx(0.01 / 3) and res.status["gate_lr"] == INTERIOR


def test_interior_choice_trains_only_the_grid():
    calls = []
    res = coordinate_search({"gate_lr": [0.01, 0.03, 0.1, 0.3]}, peaked({"gate_lr": 0.05}, calls))
    assert res.best == {"gate_lr": 0.03} and len(calls) == 4 and res.status["gate_lr"] == INTERIOR


def test_stated_bounds_stop_the_extension_and_say_so():
    res = coordinate_search({"lr": [0.01, 0.03]}, peaked({"lr": 10.0}, []))  # lr bound 0.1
    assert res.best["lr"] == pytest.approx(0.09) and res.status["lr"] == BOUND
    res = coordinate_search({"x": [1.0, 3.0]}, peaked({"x": 1e6}, []), max_steps=2)  # at most 2 steps per side
    assert res.best["x"] == pytest.approx(27.0) and res.status["x"] == BOUND


def test_dimensions_one_at_a_time_from_the_first_value_and_fixed_grids_not_searched():
    calls = []
    res = coordinate_search(
        {"gate_lr": [0.01, 0.03, 0.1, 0.3], "lr": [1e-3, 3e-3], "lam": [1.0]},
        peaked({"gate_lr": 0.1, "lr": 3e-3, "lam": 1.0}, calls),
    )
    assert [c["lr"] for c in calls[:4]] == [1e-3] * 4  # the gate-lr line at the lr grid's first value
    assert res.best == {"gate_lr": 0.1, "lr": 3e-3, "lam": 1.0}
    assert res.status == {"gate_lr": INTERIOR, "lr": INTERIOR, "lam": FIXED}
    assert len(calls) == 4 + 2  # the lr line reuses (0.1, 1e-3) and extends once above 3e-3


def test_resume_from_known_points_trains_nothing_twice():
    first = coordinate_search(
        {"lr": [1e-3, 3e-3]}, peaked({"lr": 0.05}, []), max_steps=0
    )  # an older, unextended search
    assert first.status["lr"] == BOUND and first.best["lr"] == 3e-3
    known = {point_key(p): s for p, s in first.tried}
    calls = []
    res = coordinate_search({"lr": [1e-3, 3e-3]}, peaked({"lr": 0.05}, calls), known=known)
    assert [c["lr"] for c in calls] == pytest.approx([9e-3, 0.027, 0.081]) and res.new == 3
    assert len(res.tried) == 5


def test_ties_prefer_the_middle_so_a_flat_line_is_not_an_edge():
    calls = []
    res = coordinate_search({"gate_lr": [0.01, 0.03, 0.1, 0.3]}, lambda p: calls.append(p) or 50.0)
    assert len(calls) == 4 and res.status["gate_lr"] == INTERIOR and res.best["gate_lr"] in (0.03, 0.1)


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="at least one value"):
        coordinate_search({"lr": []}, lambda p: 0)
    with pytest.raises(ValueError, match="factor"):
        coordinate_search({"lr": [1.0]}, lambda p: 0, factor=1.0)
