"""Trivial baselines, paired seed differences, plateau steps and the table's marks, on hand-made fixtures.

The records below are small dicts written for these tests (test fixtures, not results).
"""

from pathlib import Path

import pytest

from analysis.data import DataError, load_task
from analysis.finetune.curves import write_plateau_table
from analysis.finetune.results import Protocol, group
from analysis.finetune.search_tables import gate_search_table
from analysis.finetune.stats import (
    at_trivial,
    claim_check,
    mean_curve,
    paired,
    plateau_step,
    settled_step,
    trivial_baseline,
)
from analysis.finetune.tables import (
    TRIVIAL_LABEL,
    glue_table,
    kurtosis_pairs,
    kurtosis_table,
    paired_table,
)


def rec(task, method, seed, dev, keep=None, tau=None, curve=None):
    """A minimal fixture record: what the tables read (config, dev_main, removed fractions, curve)."""
    cfg = {"task": task, "method": method, "seed": seed, "epochs": 2}
    r = {"config": cfg, "dev_main": dev, "removed_fraction": 0.0, "curve": curve or []}
    if method == "gates":
        cfg.update(keep=keep, bias=True, objective="target")
        if tau is not None:
            cfg["kurtosis_tau"] = tau
        r.update(
            removed_fraction=1 - keep + 0.01,
            removed_asked=1 - keep,
            correction={"gates_changed": 3, "removed_before": 1 - keep + 0.05, "removed_after": 1 - keep + 0.01},
        )
    return r


def protocol(records, name="fixture") -> Protocol:
    return Protocol(name, Path(f"{name}.jsonl"), records, group(records))


# ---- trivial baseline -----------------------------------------------------------------------------------


def test_trivial_baseline_from_fixture_labels():
    labels = [0, 0, 0, 1]
    assert trivial_baseline(labels, "accuracy") == pytest.approx(75.0)  # majority class 0
    # F1 of the positive class: "always 1" gives 2*1 / (2*1 + 3) = 40, the best constant (always 0 gives 0)
    assert trivial_baseline(labels, "f1") == pytest.approx(40.0)
    assert trivial_baseline([1, 1, 0, 1, 0], "matthews") == 0.0
    assert trivial_baseline([0.5, 2.0, 4.5, 3.0], "pearson") == 0.0


def test_trivial_baseline_on_the_glue_dev_sets():
    want = {"SST-2": 50.9, "MRPC": 81.2, "RTE": 52.7, "CoLA": 0.0, "STS-B": 0.0}
    for task, value in want.items():
        try:
            t = load_task(task)
        except DataError:
            pytest.skip("GLUE data not present")
        assert trivial_baseline(t.dev.labels, t.metric) == pytest.approx(value, abs=0.05), task


def test_at_trivial_margin():
    assert at_trivial(81.9, 81.2) and at_trivial(70.0, 81.2) and not at_trivial(82.3, 81.2)
    assert not at_trivial(50.0, None)
    # over seeds: a mean 1.6 above a 0 baseline with std 2.2 (3 seeds) is within two standard errors
    assert at_trivial([-0.8, 3.6, 1.9], 0.0) and not at_trivial([9.5, 15.0, 5.7], 0.0)


# ---- paired differences ---------------------------------------------------------------------------------


def paired_fixture():
    rs = []
    for s, (g_a, g_b, l_a, l_b, b_a, b_b) in enumerate(
        [(80, 70, 82, 71, 79, 69), (81, 72, 81, 70, 80, 70), (79, 71, 83, 73, 78, 68)]
    ):
        rs += [
            rec("SST-2", "gates", s, g_a, keep=0.7),
            rec("MRPC", "gates", s, g_b, keep=0.7),
            rec("SST-2", "lora", s, l_a),
            rec("MRPC", "lora", s, l_b),
            rec("SST-2", "bias", s, b_a),
            rec("MRPC", "bias", s, b_b),
        ]
    return rs


def test_paired_difference_of_the_task_average_per_seed():
    p = protocol(paired_fixture())
    d = paired(p, ("gates", 0.7), ("lora", None))
    # seed 0: (80+70)/2 - (82+71)/2 = -1.5; seed 1: 76.5 - 75.5 = +1; seed 2: 75 - 78 = -3
    assert d.seeds == [0, 1, 2] and d.diffs == pytest.approx([-1.5, 1.0, -3.0])
    assert d.mean == pytest.approx(-3.5 / 3) and d.std == pytest.approx(2.0207, abs=1e-4)
    sst = paired(p, ("gates", 0.7), ("bias", None), tasks=["SST-2"])
    assert sst.diffs == pytest.approx([1.0, 1.0, 1.0]) and sst.tasks == ["SST-2"]
    assert "s1: +1.0" in str(d)


def test_paired_difference_uses_only_seeds_every_task_has():
    rs = [
        r
        for r in paired_fixture()
        if not (r["config"]["task"] == "MRPC" and r["config"]["method"] == "lora" and r["config"]["seed"] == 2)
    ]
    p = protocol(rs)
    assert paired(p, ("gates", 0.7), ("lora", None)).seeds == [0, 1]
    assert paired(p, ("gates", 0.7), ("lora", None), tasks=["SST-2"]).seeds == [0, 1, 2]
    assert paired(p, ("gates", 0.7), ("full", None)) is None


def test_paired_table_rows():
    table = paired_table(protocol(paired_fixture()))
    assert "| gates keep 0.7 − lora | -2.0 ± 2.0 | -0.3 ± 2.1 | -1.2 ± 2.0 |" in table
    assert "gates keep 0.7 − bias" in table


def test_kurtosis_variant_is_its_own_setting_and_is_paired_with_plain():
    rs = paired_fixture() + [
        rec(t, "gates", s, dev + 0.5, keep=0.7, tau=100.0) for s in range(3) for t, dev in (("SST-2", 80), ("MRPC", 70))
    ]
    p = protocol(rs)
    assert "gates (kurtosis tau=100)" in p.labels and "gates" in p.labels
    assert kurtosis_pairs(p) == [(("gates (kurtosis tau=100)", 0.7), ("gates", 0.7))]
    table = kurtosis_table(p)
    assert (
        "| SST-2 | gates keep 0.7 | 80.0 ± 1.0 | gates (kurtosis tau=100) keep 0.7 | 80.5 ± 0.0 | +0.5 ± 1.0 |" in table
    )


# ---- plateau --------------------------------------------------------------------------------------------


def test_plateau_step_on_a_synthetic_curve():
    steps = [100, 200, 300, 400, 500, 600, 700]
    values = [60.0, 75.0, 79.8, 81.0, 80.1, 79.9, 80.0]  # plateau = mean of the last 3 = 80.0
    assert plateau_step(steps, values) == 300  # 79.8 is the first within 0.5
    assert settled_step(steps, values) == 500  # 81.0 at step 400 leaves the band again
    assert plateau_step([], []) is None


def test_mean_curve_and_plateau_table(tmp_path):
    def curve(off):
        return [{"step": 10 * i, "dev_main": min(80.0, 50 + 10 * i) + off} for i in range(1, 9)]

    rs = [rec("SST-2", "lora", s, 80.0, curve=curve(s)) for s in range(3)]
    steps, m, sd = mean_curve(rs)
    assert steps[:2] == [10, 20] and m[0] == pytest.approx(61.0) and sd[0] == pytest.approx(1.0)
    path = write_plateau_table(protocol(rs, "convergence-check"), tmp_path / "convergence-check_plateau.md")
    text = path.read_text()
    # mean curve 61, 71, 81, 81, ...: plateau 81.0, first within 0.5 at step 30 = 30/(80/2 epochs) = 0.75 ep
    assert "| SST-2 | lora | 3 | 8 | 80 | 81.0 | 30 (0.75 ep) | 30 (0.75 ep) |" in text


# ---- the GLUE table marks what the trivial baseline already reaches ------------------------------------


def test_glue_table_marks_cells_at_the_trivial_level():
    rs = paired_fixture()
    table = glue_table(protocol(rs), base={"SST-2": 50.9, "MRPC": 81.3})
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert rows[TRIVIAL_LABEL].startswith(f"| {TRIVIAL_LABEL} | – | 50.9 | 81.3 | 66.1 |")
    assert "| 80.0 ± 1.0 | 71.0 ± 1.0 † |" in rows["gates"]  # MRPC mean 71 is below 81.3
    assert " 82.0 ± 1.0 | 71.3 ± 1.5 † |" in rows["lora"]
    assert "30 → 31.0 ± 0.0" in rows["gates"]  # asked -> got
    assert table.count("†") == 3 + 1  # the MRPC cell of each method (GLUE avgs ~76 > 66.1 + 1), + the footnote
    # two of the five GLUE tasks: the average column names them instead of claiming a GLUE average
    assert "| avg (SST-2, MRPC) |" in table.splitlines()[0] and "GLUE avg" not in table


def test_glue_table_gives_the_range_of_trainable_params_over_tasks():
    rs = [
        dict(rec("SST-2", "head", 0, 80.0), params={"trainable": 770}),
        dict(rec("STS-B", "head", 0, 40.0), params={"trainable": 385}),
        dict(rec("SST-2", "lora", 0, 86.0), params={"trainable": 74_500}),
        dict(rec("STS-B", "lora", 0, 85.0), params={"trainable": 74_500}),
    ]
    rows = {line.split("|")[1].strip(): line for line in glue_table(protocol(rs)).splitlines() if line.startswith("| ")}
    assert "| 385–770 |" in rows["head"]  # not their mean, which no run has
    assert "| 74.5k |" in rows["lora"]


def test_claim_check_counts_removal_at_the_tables_precision():
    rs = paired_fixture()
    for r in rs:
        if r["config"]["method"] == "gates":
            r["removed_fraction"] = 0.2998  # shown as 30.0 in every table
    c = claim_check(protocol(rs))
    assert c.gate_keep == 0.7 and c.gate_dev == pytest.approx(75.5)  # mean of the seeds' (SST-2 + MRPC) / 2
    for r in rs:
        if r["config"]["method"] == "gates":
            r["removed_fraction"] = 0.2994  # 29.9: short of the goal
    assert claim_check(protocol(rs)).gate_label is None


def test_gate_search_table_lists_every_point_with_what_training_removed_alone():
    r = rec("STS-B", "gates", 0, 83.0, keep=0.7)
    r["config"].update(gate_lr=0.1, lr=1e-3)
    r["grid"] = {"status": {"gate_lr": "interior", "lr": "bound"}, "tried": {}}
    cliff = {
        "gate_lr": 0.01,
        "lr": 1e-3,
        "val_main": 84.6,
        "removed_fraction": 0.3,
        "correction": {"removed_before": 0.083, "removed_after": 0.3, "gates_changed": 5496},
    }
    r["hp_search"] = [
        {
            "gate_lr": 0.1,
            "lr": 1e-3,
            "val_main": 83.8,
            "removed_fraction": 0.311,
            "correction": {"removed_before": 0.311, "removed_after": 0.311, "gates_changed": 0},
        },
        cliff,
    ]
    table = gate_search_table(protocol([r]))
    assert "| gates keep 0.7 | STS-B | 0.01 | 1e-3 | 8.3 | 5496 | 84.6 |" in table
    assert "| gates keep 0.7 | STS-B | 0.1 | 1e-3 | 31.1 | 0 | 83.8 ◀ |" in table
    assert gate_search_table(protocol([rec("STS-B", "lora", 0, 85.0)])) is None


def test_correction_table_shows_before_after_and_an_undone_recovery():
    from analysis.finetune.search_tables import correction_table

    quiet, acted = rec("STS-B", "gates", 0, 83.0, keep=0.7), rec("STS-B", "gates", 1, 82.9, keep=0.7)
    quiet["correction"] = {"gates_changed": 0, "removed_before": 0.3, "removed_after": 0.3}
    acted["correction"] = {
        "gates_changed": 526,
        "changed_fraction": 0.0127,
        "removed_before": 0.32,
        "removed_after": 0.30,
        **{"val_main_before": 83.8, "val_main_after": 83.5, "dev_main_before": 82.8, "dev_main_after": 82.9},
        "recovery": {"steps": 49, "kept": False, "val_main_after": 83.4, "dev_main_after": 82.4},
    }
    table = correction_table(protocol([quiet, acted]))
    rows = [line for line in table.splitlines() if line.startswith("| gates")]
    assert len(rows) == 1  # the run whose correction changed nothing has no row
    assert (
        "| 1 | 32.0 → 30.0 | 526 (1.3%) | 83.8 → 83.5 → 83.4 | 82.8 → 82.9 → 82.4 | 49 (not kept: val fell) |"
        in rows[0]
    )


def test_removal_summary_counts_the_controller_alone_and_costly_corrections():
    from analysis.finetune.search_tables import removal_summary

    runs = [rec("STS-B", "gates", s, 83.0, keep=0.7) for s in range(4)]
    runs[0]["correction"] = {"gates_changed": 0, "removed_before": 0.31, "removed_after": 0.31}  # alone: yes
    runs[1]["correction"] = {"gates_changed": 9, "removed_before": 0.325, "removed_after": 0.30}  # 2.5 over: no
    runs[1]["correction"].update(dev_main_before=84.0, dev_main_after=82.5)  # lost 1.5, nothing recovered
    runs[2]["correction"] = {"gates_changed": 9, "removed_before": 0.29, "removed_after": 0.30}
    runs[2]["correction"].update(
        dev_main_before=84.0, dev_main_after=82.0, recovery={"kept": True, "dev_main_after": 83.9}
    )  # lost 2, but a recovery was kept
    runs[3]["correction"] = {"gates_changed": 5, "removed_before": 0.27, "removed_after": 0.30}  # not measured
    assert removal_summary(protocol(runs)) == (
        "Controller alone within 2 points of the request (before any correction): 2 of 4 gate runs (50%). The "
        "correction changed gates in 3; of the 2 with dev measured before and after it, 1 lost more than 1 point "
        "with no recovery kept."
    )
    assert removal_summary(protocol([rec("STS-B", "lora", 0, 85.0)])) is None


def test_removal_table_shows_what_the_compressed_models_physically_drop():
    from analysis.finetune.search_tables import removal_table

    runs = [rec("STS-B", "gates", s, 83.0, keep=0.7) for s in range(2)]
    for r, inner, hidden in zip(runs, (0.10, 0.20), (0.26, 0.30)):
        size = {"inner": {"encoder_linear_removed": inner}, "hidden": {"encoder_linear_removed": hidden}}
        r["compressed"] = {"size": size}
    row = next(line for line in removal_table(protocol(runs)).splitlines() if line.startswith("| gates"))
    assert row.endswith("| 15.0 ± 7.1 / 28.0 ± 2.8 |")
    del runs[0]["compressed"], runs[1]["compressed"]  # records without a compressed model
    row = next(line for line in removal_table(protocol(runs)).splitlines() if line.startswith("| gates"))
    assert row.endswith("| – |")


def test_glue_table_marks_a_restarted_seed_and_gives_every_start_s_dev():
    rs = [rec("MRPC", "lora", 0, 89.0), rec("MRPC", "lora", 1, 88.0), rec("MRPC", "bias", 0, 88.4)]
    rs[1]["config"]["train_seed"] = 1001
    rs[1]["failed_starts"] = [{"train_seed": 1, "dev_main": 0.0, "val_main": 0.0}]
    rows = {line.split("|")[1].strip(): line for line in glue_table(protocol(rs)).splitlines() if line.startswith("| ")}
    assert "88.5 ± 0.7 ʳ" in rows["lora"] and "ʳ" not in rows["bias"]
    assert "MRPC lora seed 1: 0.0 (train seed 1) → 88.0 (train seed 1001)" in glue_table(protocol(rs))
    assert "ʳ" not in glue_table(protocol(rs[:1] + rs[2:]))
