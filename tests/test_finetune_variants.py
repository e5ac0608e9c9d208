"""analysis.finetune.variants: a controller setting beside the runs it changes, on hand-made fixture records."""

from pathlib import Path

from analysis.finetune.results import Protocol, group
from analysis.finetune.variants import variant_table


def gate_run(seed, recenter, trace, before, changed, dev, gate_lr=0.03) -> dict:
    cfg = {"task": "SST-2", "method": "gates", "seed": seed, "keep": 0.7, "bias": True, "gate_lr": gate_lr, "lr": 3e-3}
    if recenter:
        cfg["control_recenter"] = True
    return {
        "config": cfg,
        "curve": [{"removed_fraction": x} for x in trace],
        "removed_asked": 0.3,
        "removed_fraction": 0.3,
        "correction": {"removed_before": before, "gates_changed": changed},
        "val_main": 85.0,
        "dev_main": dev,
    }


def protocol(name, records) -> Protocol:
    return Protocol(name, Path(f"{name}.jsonl"), records, group(records))


BASE = protocol(
    "base",
    [
        gate_run(2, False, [0.1, 0.329, 0.276], 0.276, 621, 84.5),
        gate_run(0, False, [0.1, 0.324, 0.286], 0.286, 0, 84.1),
        gate_run(1, False, [0.1, 0.32, 0.29], 0.29, 0, 83.5),
    ],
)


def test_each_variant_run_sits_under_its_twin_and_says_whether_the_controller_alone_met_the_request():
    variant = protocol(
        "v",
        [
            gate_run(2, True, [0.1, 0.31, 0.297], 0.297, 0, 84.6),
            gate_run(0, True, [0.1, 0.31, 0.30], 0.30, 0, 84.0, gate_lr=0.1),  # no twin: another gate lr
        ],
    )
    table = variant_table(BASE, variant, "control_recenter")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:4]]
    assert rows == [
        ["SST-2, s2 (30% asked)", "false", "10.0 **32.9** 27.6", "27.6", "**no**", "621", "85.0 / 84.5"],
        ["SST-2, s2 (30% asked)", "true", "10.0 **31.0** 29.7", "29.7", "yes", "0", "85.0 / 84.6"],
    ]
    assert table.endswith("1 run(s): controller alone +2.1 points removed, val +0.0, dev +0.1.")


def test_no_twin_no_table():
    variant = protocol("v", [gate_run(5, True, [0.3], 0.3, 0, 84.0)])
    assert variant_table(BASE, variant, "control_recenter") is None
