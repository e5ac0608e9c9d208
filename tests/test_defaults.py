"""The gate settings a user gets are stated once (gatecore/defaults.py): GateConfig, a user's sweep and the
HF command line all start from them, and no named protocol depends on them (its run ids would move)."""

import dataclasses

import gatecore
from analysis.finetune.config import SweepConfig
from analysis.finetune.hf_finetune import HFFinetuneConfig
from analysis.finetune.protocols import PROTOCOLS
from gatecore import defaults


def test_every_entry_point_starts_from_the_library_defaults():
    gate, sweep, hf = gatecore.GateConfig(), SweepConfig(), HFFinetuneConfig()
    assert gate.objective == sweep.objective == hf.objective == defaults.OBJECTIVE
    assert gate.gate_lr == hf.gate_lr == defaults.GATE_LR and tuple(sweep.gate_lr) == (defaults.GATE_LR,)
    assert gate.removed == hf.removed == defaults.REMOVED and [round(1 - k, 10) for k in sweep.keep] == [
        defaults.REMOVED
    ]
    assert gate.head_lr == sweep.head_lr == hf.head_lr == defaults.HEAD_LR
    assert gate.lam == hf.lam == defaults.LAM and tuple(sweep.lam) == (defaults.LAM,)
    assert gate.lam_warmup == sweep.lam_warmup == defaults.LAM_WARMUP
    assert (sweep.sigma, sweep.reg_sigma) == (defaults.SIGMA, defaults.REG_SIGMA)
    assert gate.control_reset == sweep.control_reset == defaults.CONTROL_RESET
    callback = gatecore.hf_trainer.GateSparsityCallback("target", 0.3, reset=gate.control_reset)
    assert callback.controller.reset == defaults.CONTROL_RESET
    assert gate.control_recenter == sweep.control_recenter == defaults.CONTROL_RECENTER
    callback = gatecore.hf_trainer.GateSparsityCallback("target", 0.3, recenter=gate.control_recenter)
    assert callback.controller.recenter == defaults.CONTROL_RECENTER


def test_named_protocols_with_gates_state_objective_and_gate_lr_themselves():
    names = {f.name for f in dataclasses.fields(SweepConfig)}
    for name, p in PROTOCOLS.items():
        assert set(p) <= names, name
        if set(p.get("methods", SweepConfig.methods)) & set(gatecore.GATE_METHODS):
            assert "objective" in p and "gate_lr" in p, f"protocol {name} relies on the defaults"
            if p.get("split_range", SweepConfig.split_range) and p.get("control", SweepConfig.control):
                assert "control_reset" in p, f"protocol {name} relies on the default controller reset"
            if p.get("control", SweepConfig.control):
                assert "control_recenter" in p, f"protocol {name} relies on the default controller recenter"
