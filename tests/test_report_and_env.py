"""gate_report, the offline model helper, and the two environment files."""

import re
from pathlib import Path

import torch
import yaml

import gatecore as gc
from gatecore.tiny import tiny_model

ROOT = Path(__file__).resolve().parent.parent


def test_gate_report_counts_closed_rows_and_columns():
    model = tiny_model("bert")
    layers = gc.add_gates(model)
    q = layers["bert.encoder.layer.0.attention.self.query"]
    with torch.no_grad():
        q.row_gate.theta[:4] = -1.0  # tanh(-1) + 0.5 < 0: closed
        q.col_gate.theta[:2] = -0.6  # closed
        q.col_gate.theta[2] = -0.5  # tanh(-0.5) + 0.5 = 0.04: open, fractional
    rep = gc.gate_report(model)
    lq = next(l for l in rep.layers if l.name.endswith("layer.0.attention.self.query"))
    assert (lq.rows_kept, lq.cols_kept) == (12, 14)
    assert abs(lq.removed_fraction - (1 - 12 * 14 / 256)) < 1e-12
    assert rep.removable_weights == 256 - 12 * 14
    assert abs(rep.removed_fraction - rep.removable_weights / rep.gated_weights) < 1e-12
    assert "removable" in str(rep) and rep.as_dict()["layers"][0]["rows_kept"] == 12


def test_local_model_dir_is_the_packaged_minilm():
    path = gc.local_model_dir()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert gc.resolve_model(None) == str(path) == gc.resolve_model("sentence-transformers/all-MiniLM-L6-v2")


def _pins(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s]+)", line)
            assert m, f"not an exact pin: {line!r}"
            out[m.group(1).lower()] = m.group(2)
    return out


def test_environment_yml_mirrors_requirements():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _pins(pip) == req
    assert req["torch"] == "2.13.0"
