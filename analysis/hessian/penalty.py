"""The sparsity term of the Hessian study's loss: a penalty as specified, or as a run trained it (`--penalty
as-trained`), and where each gate vector sits on the target penalty's kink (docs/design.md §1, §11).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from analysis.constants import repo_path, study_results
from gatecore import Gate, sparsity_penalty

FINETUNE_RESULTS = study_results("finetune")


def penalty_fn(
    lam: float, objective: str, target: float | None, reg_sigma: float | None, kurtosis_tau: float | None = None
):
    """lam * sparsity_penalty(model, objective, target, reg_sigma): the term training adds (docs/design.md §1)."""
    kw = {} if kurtosis_tau is None else {"kurtosis_tau": kurtosis_tau}
    return lambda model: lam * sparsity_penalty(model, objective, target, reg_sigma=reg_sigma, **kw)


@torch.no_grad()
def penalty_kink(model, spec: dict) -> dict | None:
    """Where each gate vector sits on the 'target' penalty's |mean P(open) - keep|: at the kink (distance 0) the
    penalty has no second derivative, and autograd's (the one-sided one) depends on the side. None for others."""
    if spec.get("objective") != "target" or spec.get("target") is None:
        return None
    keep = 1.0 - spec["target"]
    d = np.array(
        [abs(float(g.prob_open(spec.get("reg_sigma")).mean()) - keep) for g in model.modules() if isinstance(g, Gate)]
    )
    return {
        "gate_vectors": int(d.size),
        "keep": keep,
        "distance_median": float(np.median(d)),
        "distance_max": float(d.max()),
        "within_1e-3": int((d <= 1e-3).sum()),
        "within_1e-2": int((d <= 1e-2).sum()),
        "note": "|mean_i P(open) - keep| per gate vector; at 0 the penalty is not twice differentiable",
    }


def finetune_record(run_id: str, results_dir: Path = FINETUNE_RESULTS) -> tuple[dict, str]:
    """(record, file relative to the repository) of a finetuning run (analysis.finetune) by its run_id."""
    for f in sorted(Path(results_dir).glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if f'"{run_id}"' in line:
                rec = json.loads(line)
                if rec.get("run_id") == run_id:
                    return rec, repo_path(f)
    raise ValueError(f"no record of finetuning run {run_id!r} in {results_dir}/*.jsonl")


def as_trained_penalty(meta: dict | None, results_dir: Path = FINETUNE_RESULTS) -> dict:
    """The sparsity term at the end of training, {lam, objective, target, reg_sigma, kurtosis_tau, source}, from a
    checkpoint's meta (`--penalty as-trained`).

    - meta["penalty"] (what `--train-steps` saves: gatecore.train.Objective.to_dict()) as it is;
    - meta["objective"] (a checkpoint saved with a finetuning run's TrainResult.objective: the objective as trained,
      gatecore.train.Objective.as_trained) as it is;
    - a finetuning-runner checkpoint (meta run_id + config, analysis.finetune): lam, objective, reg_sigma and
      kurtosis_tau from the config; the target from the run's record (results/finetune/*.jsonl, by run_id). The
      runner adds lam * ramp * sparsity_penalty(objective, target = 1 - knob) with the sparsity controller's knob
      (gatecore.sparsity_control), which is held fixed over the last steps: at the end ramp = 1 and the knob is the
      record's final_keep_target (for l0 the knob multiplies lam and there is no target).
    """
    meta = meta or {}
    if meta.get("penalty"):
        return dict(meta["penalty"])
    if meta.get("objective"):
        return {**meta["objective"], "source": "checkpoint meta: the objective as trained"}
    cfg = meta.get("config") or {}
    if not (meta.get("run_id") and cfg.get("objective")):
        raise ValueError(
            "--penalty as-trained needs a checkpoint whose meta records 'penalty' (lam, objective, target, "
            "reg_sigma) or a finetuning run (run_id + config with objective, lam, keep)"
        )
    rec, source = finetune_record(meta["run_id"], results_dir)
    knob = rec.get("final_keep_target")
    if knob is None:
        raise ValueError(
            f"finetuning run {meta['run_id']} ({source}) records no final_keep_target: no penalty was trained"
        )
    lam, objective = float(cfg["lam"]), cfg["objective"]
    return dict(
        lam=lam * knob if objective == "l0" else lam,
        objective=objective,
        target=None if objective == "l0" else 1.0 - knob,
        reg_sigma=cfg.get("reg_sigma"),
        kurtosis_tau=cfg.get("kurtosis_tau"),
        source=f"{source}, run {meta['run_id']}: config lam/objective/reg_sigma, target = 1 - final_keep_target",
    )
