"""analysis.finetune.longer: a protocol beside its longer twin, on hand-made fixture records (not results)."""

from pathlib import Path

from analysis.finetune.longer import longer_table
from analysis.finetune.results import Protocol, group


def protocol(name, epochs, schedule, devs) -> Protocol:
    """devs: {(task, method): [dev per seed]}; gates ask 30% and get 31%."""
    rs = []
    for (task, method), per_seed in devs.items():
        for s, dev in enumerate(per_seed):
            cfg = {"task": task, "method": method, "seed": s, "epochs": epochs, "schedule": schedule}
            r = {"config": cfg, "dev_main": dev, "removed_fraction": 0.0}
            if method == "gates":
                cfg.update(keep=0.7, bias=True)
                r.update(removed_fraction=0.31, removed_asked=0.3)
            rs.append(r)
    return Protocol(name, Path(f"{name}.jsonl"), rs, group(rs))


SHORT = protocol(
    "short",
    3,
    "linear",
    {("STS-B", "lora"): [85, 85, 86], ("STS-B", "bias"): [85, 86, 86], ("STS-B", "gates"): [84, 84, 85]},
)
LONG = protocol(  # seed 2 of the gates not trained yet: the gaps pair seeds 0 and 1 only
    "long",
    12,
    "constant",
    {("STS-B", "lora"): [84, 83, 84], ("STS-B", "bias"): [86, 86, 87], ("STS-B", "gates"): [81, 82]},
)


def row(table: str, setting: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 1 and cells[1] == setting:
            return cells
    raise AssertionError(f"no row {setting!r} in\n{table}")


def test_each_setting_is_paired_by_seed_on_the_seeds_both_protocols_have():
    table = longer_table(SHORT, LONG)
    assert row(table, "lora")[0] == "STS-B (3 epochs, linear lr → 12 epochs, constant lr)"
    assert row(table, "lora")[2:] == ["85.3 ± 0.6", "83.7 ± 0.6", "-1.7 ± 0.6 (s0: -1.0, s1: -2.0, s2: -2.0)"]
    assert row(table, "gates keep 0.7")[2:] == [
        "84.0 ± 0.0 (30 → 31.0 ± 0.0)",
        "81.5 ± 0.7 (30 → 31.0 ± 0.0)",
        "-2.5 ± 0.7 (s0: -3.0, s1: -2.0)",
    ]


def test_the_gaps_and_the_verdict_say_how_far_they_moved():
    table = longer_table(SHORT, LONG)
    # gates - lora: short s0 -1, s1 -1; long s0 -3, s1 -1: moved -2, 0
    assert row(table, "gates keep 0.7 − lora")[2:] == ["-1.0 ± 0.0", "-2.0 ± 1.4", "-1.0 ± 1.4 (s0: -2.0, s1: +0.0)"]
    assert (
        "STS-B, gates keep 0.7 − lora: -1.0 → -2.0 with 12 epochs, constant lr: the gates lost 1.0 points on lora, "
        "not more than 1 (2 seeds)." in table
    )
    # gates - bias: short -1, -2; long -5, -4: widened by 3.0
    assert "gates keep 0.7 − bias: -1.5 → -4.5" in table and "lost 3.0 points on bias, more than 1" in table


def test_no_shared_task_gives_no_table():
    other = protocol("other", 3, "linear", {("SST-2", "lora"): [90]})
    assert longer_table(other, LONG) is None
