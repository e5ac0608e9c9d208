"""analysis.finetune.sizes: the side-by-side table across model sizes, on hand-made fixture records (not results)."""

from pathlib import Path

from analysis.finetune.results import Protocol, group
from analysis.finetune.sizes import pick, plot_sizes, size_table, verdict


def rec(model, task, method, seed, dev, keep=None, total=1e6):
    cfg = {"model": model, "task": task, "method": method, "seed": seed, "epochs": 2}
    r = {"config": cfg, "dev_main": dev, "removed_fraction": 0.0, "params": {"total": total}}
    if method == "gates":
        cfg.update(keep=keep, bias=True)
        r.update(removed_fraction=1 - keep + 0.01, removed_asked=1 - keep, compressed={"speedup_cpu": 2 - keep})
    return r


def protocol(name, model, total, devs) -> Protocol:
    """devs: {(task, method, keep): [dev per seed]}."""
    rs = [
        rec(model, task, method, s, d, keep, total)
        for (task, method, keep), per_seed in devs.items()
        for s, d in enumerate(per_seed)
    ]
    return Protocol(name, Path(f"{name}.jsonl"), rs, group(rs))


SMALL = protocol(
    "small",
    "tiny-22m",
    22e6,
    {
        ("SST-2", "lora", None): [86, 87, 88],
        ("SST-2", "bias", None): [84, 84, 85],
        ("SST-2", "gates", 0.7): [83, 84, 84],
        ("STS-B", "lora", None): [85, 85, 85],
        ("STS-B", "bias", None): [86, 86, 86],
        ("STS-B", "gates", 0.7): [83, 84, 82],
    },
)
BASE = protocol(
    "base",
    "base-110m",
    110e6,
    {
        ("SST-2", "lora", None): [92, 93, 92],
        ("SST-2", "bias", None): [91, 91, 91],
        ("SST-2", "gates", 0.7): [92, 92, 92],
        ("SST-2", "gates", 0.8): [93, 93, 92],
        ("STS-B", "lora", None): [88, 88, 88],
        ("STS-B", "bias", None): [87, 87, 87],
        ("STS-B", "gates", 0.7): [88, 87, 88],
        ("MRPC", "lora", None): [88, 88, 88],  # not in SMALL: not shown
    },
)


def row(table: str, task: str, setting: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [task, setting]:
            return cells[2:]
    raise AssertionError(f"no row {task} / {setting}")


def test_side_by_side_cells_and_paired_differences():
    t = size_table([SMALL, BASE])
    assert "`small`" in t and "base-110m (`base`, float32)" in t and "MRPC" not in t
    mixed = protocol("mixed", "m", 1e6, {("SST-2", "lora", None): [1.0]})
    mixed.records[0]["config"]["autocast"] = "bfloat16"
    assert "m (`mixed`, bfloat16 autocast)" in size_table([SMALL, mixed])
    assert row(t, "SST-2", "lora") == ["87.0 ± 1.0", "92.3 ± 0.6"]
    assert row(t, "SST-2", "gates keep 0.7")[0] == "83.7 ± 0.6 (30 → 31.0 ± 0.0)"
    assert row(t, "SST-2", "gates keep 0.8") == ["–", "92.7 ± 0.6 (20 → 21.0 ± 0.0)"]
    # seed by seed: SST-2 gates - lora on the small model = -3, -3, -4
    assert row(t, "SST-2", "gates keep 0.7 − lora (paired)")[0].startswith("-3.3 ± 0.6 (s0: -3.0, s1: -3.0, s2: -4.0)")
    # task average per seed: small gates (83, 84, 83), lora (85.5, 86, 86.5) -> -2.5, -2.0, -3.5
    avg = "average (SST-2, STS-B)"
    assert row(t, avg, "gates keep 0.7 − lora (paired)")[0] == "-2.7 ± 0.8 (s0: -2.5, s1: -2.0, s2: -3.5)"
    # the 20% setting lacks STS-B on the base model: no average, rather than an average over SST-2 alone
    assert row(t, avg, "gates keep 0.8") == ["–", "–"]
    assert row(t, avg, "trivial (constant prediction)") == ["25.5", "25.5"]
    assert row(t, avg, "gates keep 0.7: speedup, dense / compressed") == ["1.30x", "1.30x"]
    assert row(t, "SST-2", "gates keep 0.8: speedup, dense / compressed") == ["–", "1.20x"]


def test_verdict_lines():
    lines = verdict([SMALL, BASE], ["SST-2", "STS-B"])
    assert lines[0].startswith("tiny-22m, gates keep 0.7 (31.0% removed): -2.7 vs LoRA, not within 1 point")
    # small: gates (83, 84, 83) vs bias (85, 85, 85.5) per seed
    assert "; -1.8 vs bias, not above it (task average, 3 seeds); " in lines[0]
    # per task: SST-2 -3.3, STS-B -1.7 (83, 84, 82 vs 85 each seed)
    assert lines[0].endswith("within 1 point of LoRA on no task (0 of 2).")
    # base: gates (90, 89.5, 90) vs lora (90, 90.5, 90) -> 0, -1, 0: within; vs bias (89, 89, 89) -> +0.8: above
    assert lines[1] == (
        "base-110m, gates keep 0.7 (31.0% removed): -0.3 vs LoRA, within 1 point; +0.8 vs bias, above it "
        "(task average, 3 seeds); within 1 point of LoRA on SST-2, STS-B (2 of 2)."
    )
    assert len(lines) == 2  # the base model's 20% setting has no task average


def test_pick_needs_every_protocol_and_the_figure_is_drawn(tmp_path):
    assert pick([SMALL], ("small", "base")) is None
    assert [p.name for p in pick([BASE, SMALL], ("small", "base"))] == ["small", "base"]
    path = plot_sizes([SMALL, BASE], tmp_path / "sizes.png")
    assert path.stat().st_size > 1000


def test_no_shared_task_gives_no_table():
    other = protocol("other", "m", 1e6, {("CoLA", "lora", None): [1.0]})
    assert size_table([SMALL, other]) is None and plot_sizes([SMALL, other], Path("unused.png")) is None


def test_trend_lines_follow_each_gap_from_the_smaller_model_to_the_larger():
    from analysis.finetune.sizes import trend

    lines = trend([BASE, SMALL], ["SST-2", "STS-B"])  # ordered by parameter count, not by argument
    # gates keep 0.7 - lora: small -2.7 (above), base -0.3; SST-2 -3.3 -> -0.3, STS-B -2.0 -> -0.3
    assert lines[0] == (
        "gates keep 0.7 − lora from tiny-22m to base-110m: -2.7 → -0.3 on the task average (closer to lora at the "
        "larger size); per task SST-2 -3.3 → -0.3, STS-B -2.0 → -0.3: closer on SST-2, STS-B (2 of 2)."
    )
    assert lines[1].startswith("gates keep 0.7 − bias from tiny-22m to base-110m: -1.8 → +0.8 on the task average")
    assert len(lines) == 2  # keep 0.8 exists on one model only
    assert trend([SMALL, BASE], ["SST-2", "MRPC"]) == []  # MRPC lacks the small model's cells


def test_a_restarted_seed_is_marked_and_footnoted():
    base = protocol("base", "base-110m", 110e6, {("SST-2", "lora", None): [92, 93], ("SST-2", "gates", 0.7): [90, 91]})
    assert "ʳ" not in size_table([SMALL, base])
    base.records[0]["failed_starts"] = [{"train_seed": 0, "dev_main": 50.9}]
    t = size_table([SMALL, base])
    assert row(t, "SST-2", "lora") == ["87.0 ± 1.0", "92.5 ± 0.7 ʳ"] and t.endswith("results/glue_table.md).")
