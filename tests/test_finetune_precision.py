"""analysis.finetune.precision: a grid point cpu-base trained in float32 and under bfloat16 autocast is paired by
its spec (minus `autocast`) and point; points of other runs or of one precision only are not."""

import json

from analysis.finetune import precision
from analysis.finetune.config import SweepConfig, expand, run_id


def _ids(**over) -> dict:
    return {
        (s["task"], s["method"], s["seed"], s.get("keep")): run_id(s)
        for s in expand(SweepConfig.of_protocol("cpu-base", **over))
    }


def test_points_of_one_run_in_both_precisions_are_paired(tmp_path):
    fp32, bf16 = _ids(autocast="float32"), _ids()
    key = ("SST-2", "gates", 0, 0.7)
    assert fp32[key] != bf16[key]  # the precision is part of the run id
    entry = lambda val, got: {"val_main": val, "removed_fraction": got}  # noqa: E731
    folder = tmp_path / "finetune"
    folder.mkdir()
    lines = {
        "cpu-base-fp32": [
            {"run_id": fp32[key], "point": {"lr": 1e-3, "gate_lr": 0.03, "lam": 1.0}, "entry": entry(89.0, 0.313)},
            {"run_id": fp32[key], "point": {"lr": 3e-3, "gate_lr": 0.03, "lam": 1.0}, "entry": entry(89.8, 0.310)},
        ],
        "cpu-base": [
            {"run_id": bf16[key], "point": {"lr": 1e-3, "gate_lr": 0.03, "lam": 1.0}, "entry": entry(89.4, 0.305)},
            {
                "run_id": bf16[("STS-B", "gates", 0, 0.7)],
                "point": {"lr": 3e-3, "gate_lr": 0.03, "lam": 1.0},
                "entry": entry(88.0, 0.3),
            },
        ],
    }
    for name, ls in lines.items():
        (folder / f"{name}.points.jsonl").write_text("".join(json.dumps(x) + "\n" for x in ls))
    block = precision.precision_block(tmp_path)
    rows = [ln for ln in block.splitlines() if ln.startswith("| SST-2") or ln.startswith("| STS-B")]
    assert rows == ["| SST-2 | gates | 0 | 30% | 0.001 | 0.03 | 89.0 | 89.4 | +0.4 | 31.3 → 30.5 |"]
    assert "Over the 1 pair(s), bf16 − float32 on val: +0.4" in block
    (folder / "cpu-base.points.jsonl").write_text("")
    assert precision.precision_block(tmp_path) is None
