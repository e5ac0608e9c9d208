"""analysis.finetune.precision: trainings of cpu-base that differ in `autocast` alone are paired: search points by
their run's spec and point (val), records by their config (val and dev); trainings of one precision only, or of
other runs, are not."""

import json

from analysis.finetune import precision
from analysis.finetune.config import SweepConfig, expand, run_id

KEY = ("SST-2", "gates", 0, 0.7)


def _specs(**over) -> dict:
    return {
        (s["task"], s["method"], s["seed"], s.get("keep")): s
        for s in expand(SweepConfig.of_protocol("cpu-base", **over))
    }


def _write(folder, name, lines):
    (folder / name).write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_search_points_in_both_precisions_are_paired(tmp_path):
    fp32, bf16 = _specs(autocast="float32"), _specs()
    assert run_id(fp32[KEY]) != run_id(bf16[KEY])  # the precision is part of the run id
    entry = lambda val, got: {"val_main": val, "removed_fraction": got}  # noqa: E731
    folder = tmp_path / "finetune"
    folder.mkdir()
    point = lambda lr: {"lr": lr, "gate_lr": 0.03, "lam": 1.0}  # noqa: E731
    _write(
        folder,
        "cpu-base-fp32.points.jsonl",
        [
            {"run_id": run_id(fp32[KEY]), "point": point(1e-3), "entry": entry(89.0, 0.313)},
            {"run_id": run_id(fp32[KEY]), "point": point(3e-3), "entry": entry(89.8, 0.310)},
        ],
    )
    _write(
        folder,
        "cpu-base.points.jsonl",
        [
            {"run_id": run_id(bf16[KEY]), "point": point(1e-3), "entry": entry(89.4, 0.305)},
            {"run_id": run_id(bf16[("STS-B", "gates", 0, 0.7)]), "point": point(3e-3), "entry": entry(88.0, 0.3)},
        ],
    )
    block = precision.precision_block(tmp_path)
    rows = [ln for ln in block.splitlines() if ln.startswith(("| SST-2", "| STS-B"))]
    assert rows == ["| SST-2 | gates | 0 | 30% | 0.001 | 0.03 | 89.0 | 89.4 | +0.4 | 31.3 → 30.5 |"]
    assert (
        "Over the 1 pair(s), bf16 − float32 on val: median +0.4, mean +0.4" in block and "Trained points" not in block
    )
    (folder / "cpu-base.points.jsonl").write_text("")
    assert precision.precision_block(tmp_path) is None


def test_records_of_one_point_in_both_precisions_are_paired_and_the_choices_listed(tmp_path):
    fp32, bf16 = _specs(autocast="float32"), _specs()

    def record(spec, lr, val, dev):
        cfg = {k: v for k, v in spec.items() if not k.endswith("_grid")} | {"lr": lr, "gate_lr": 0.03, "lam": 1.0}
        return {"run_id": run_id(spec), "config": cfg, "val_main": val, "dev_main": dev, "removed_fraction": 0.31}

    folder = tmp_path / "finetune"
    folder.mkdir()
    _write(folder, "cpu-base-fp32.jsonl", [record(fp32[KEY], 3e-3, 89.8, 88.9)])
    _write(folder, "cpu-base.jsonl", [record(bf16[KEY], 1e-3, 89.8, 86.7)])
    block = precision.precision_block(tmp_path)
    assert "the searches chose float32 lr 0.003, gate lr 0.03 (val 89.8, dev 88.9); bf16 lr 0.001" in block
    assert "Trained points" not in block  # two different points: nothing to pair yet
    single = {k: v for k, v in bf16[KEY].items() if k != "lr_grid"} | {"lr_grid": [3e-3]}
    _write(folder, "precision-points.jsonl", [record(single, 3e-3, 89.7, 88.1)])
    block = precision.precision_block(tmp_path)
    rows = [ln for ln in block.split("Trained points")[1].splitlines() if ln.startswith("| SST-2")]
    assert rows == ["| SST-2 | gates | 0 | 30% | 0.003 | 0.03 | 89.8 / 89.7 | 88.9 | 88.1 | -0.8 | 31.0 → 31.0 |"]
    assert "Over the 1 pair(s), bf16 − float32 on dev: median -0.8, mean -0.8" in block
