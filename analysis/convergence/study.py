"""Does the stochastic-gate process converge? Planted problems, gates vs LoRA (issue 5).

    python -m analysis.convergence                          # defaults below, gates and LoRA, 3 seeds
    python -m analysis.convergence --sweep sigma --values 0.01 0.03 0.1 0.3
    python -m analysis.convergence --problem mlp --optimizer sgd

From Python: `run(ConvergenceConfig(problem="mlp", seeds=5))`, or a sweep
`run(ConvergenceConfig(methods="gates"), sweep="lam", values=[0.0, 0.1, 1.0])`; argv is parsed in `main` only.

Trains row/column gates (gatecore.GatedLinear, fresh gate noise every step) and
LoRA on a planted problem (analysis.convergence.planted) and measures along the path:

    F(theta) = E_eps[L] + lam R            exact for linear teachers, CRN Monte Carlo otherwise
    gap      = F - F*                      F* = min(planted optimum polished by L-BFGS, path, polished end;
                                                    LoRA on linear teachers: reduced-rank regression, exact)
    ||grad F||^2, PL ratio ||grad F||^2 / (2 gap), fraction of binary eval gates,
    precision / recall of the removed (eval gate == 0) rows+columns against the planted ones.

Writes results/convergence/<problem>[_<sweep>].json with provenance; figures by
analysis/convergence/plots.py (`make figures`). docs/design.md §1, §5.
"""

from __future__ import annotations

import argparse
import copy
import math
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from analysis.cli import add_options, from_args, option
from analysis.constants import study_results
from analysis.convergence.config import LORA_LR, LR, ConvergenceConfig
from analysis.convergence.planted import (
    ObjectiveSpec,
    Problem,
    expected_objective,
    gated_layer,
    gated_student,
    lora_optimum,
    lora_student,
    make_problem,
)
from analysis.convergence.plots import summary_table
from analysis.provenance import provenance, write_json
from gatecore.train import Objective, lbfgs_minimize, train_loop

THETA_CLOSED, THETA_OPEN = -20.0, 3.0  # tanh(-20) = -1 in float64: a closed gate at its limit


@dataclass
class Trace:
    """One training run: curves at the eval steps and the reference value F*."""

    method: str
    seed: int
    step: list = field(default_factory=list)
    F: list = field(default_factory=list)
    se: list = field(default_factory=list)
    grad_sq: list = field(default_factory=list)
    binary: list = field(default_factory=list)
    precision: list = field(default_factory=list)
    recall: list = field(default_factory=list)
    gates: list | dict = field(default_factory=list)  # eval gates of a few tracked gates (gates method)
    F_star: float = math.nan
    F_candidates: dict = field(default_factory=dict)
    planted_polished: dict = field(default_factory=dict)  # recovery of the planted point after L-BFGS


def eval_steps(steps: int, k: int) -> list[int]:
    return sorted({0, steps, *np.unique(np.geomspace(1, steps, k).round().astype(int)).tolist()})


def spec_of(cfg: ConvergenceConfig, p: Problem) -> ObjectiveSpec:
    target = cfg.target
    if target is not None and target < 0:  # the planted sparsity
        if cfg.objective == "params":
            target = 1 - float((~p.rows_off).sum() * (~p.cols_off).sum()) / (p.rows_off.numel() * p.cols_off.numel())
        else:
            target = float(torch.cat([p.rows_off, p.cols_off]).float().mean())
    return ObjectiveSpec(cfg.lam, cfg.objective, target, cfg.draws)


def recovery(student, p: Problem) -> tuple[float, float, float]:
    """(binary fraction, precision, recall) of eval-gate-closed rows+columns vs the planted ones."""
    z = torch.cat(gated_layer(student).eval_gates())
    removed, planted = z == 0, torch.cat([p.rows_off, p.cols_off])
    tp = float((removed & planted).sum())
    prec = tp / float(removed.sum()) if removed.any() else float(not planted.any())
    rec = tp / float(planted.sum()) if planted.any() else 1.0
    return float(((z == 0) | (z == 1)).double().mean()), prec, rec


def objective_and_grad(student, p, spec) -> tuple[float, float, float]:
    F, se = expected_objective(student, p, spec)
    grads = torch.autograd.grad(F, [q for q in student.parameters() if q.requires_grad])
    return float(F.detach()), se, float(sum((g * g).sum() for g in grads))


def polish(student, p, spec, iters: int) -> float:
    """F after L-BFGS on the exact / fixed-draw objective: an upper bound on inf F near this point."""
    params = [q for q in student.parameters() if q.requires_grad]
    lbfgs_minimize(
        params,
        lambda: expected_objective(student, p, spec)[0],
        lr=1,
        max_iter=iters,
        history_size=50,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )
    with torch.no_grad():
        return float(expected_objective(student, p, spec)[0])


def _set_gates(student, closed_rows, closed_cols):
    """Closed gates at their limit (mu = -1), open ones at mu = tanh(3) from where L-BFGS moves them."""
    gl = gated_layer(student)
    with torch.no_grad():
        for gate, closed in ((gl.row_gate, closed_rows), (gl.col_gate, closed_cols)):
            gate.theta.copy_(torch.where(closed, THETA_CLOSED, THETA_OPEN).to(gate.theta.dtype))
    return student


def reference(tr: Trace, student, p: Problem, cfg: ConvergenceConfig, spec: ObjectiveSpec) -> None:
    """F* = the smallest of: the path, L-BFGS from the planted optimum, L-BFGS from the end point."""
    c = {"path": min(tr.F)}
    if tr.method == "lora":
        if p.kind == "mlp":
            c["polished_end"] = polish(copy.deepcopy(student), p, spec, cfg.polish_iters)
        else:
            c["reduced_rank_regression"] = lora_optimum(p, cfg.lora_r)
    else:
        planted = gated_student(p, cfg.sigma, cfg.reg_sigma)
        c["planted"] = polish(_set_gates(planted, p.rows_off, p.cols_off), p, spec, cfg.polish_iters)
        tr.planted_polished = dict(zip(("binary", "precision", "recall"), recovery(planted, p)))
        end = copy.deepcopy(student)
        with torch.no_grad():  # closed eval gates to their limit; open ones keep their theta
            for g in gated_layer(end).gates():
                g.theta.copy_(torch.where(g.eval_gate() == 0, torch.full_like(g.theta, THETA_CLOSED), g.theta))
        c["polished_end"] = polish(end, p, spec, cfg.polish_iters)
    tr.F_candidates, tr.F_star = c, min(c.values())


def train(cfg: ConvergenceConfig, seed: int, method: str, progress: bool = True) -> Trace:
    p = make_problem(
        cfg.problem, cfg.m, cfg.n, cfg.hidden, cfg.samples, cfg.rows_off, cfg.cols_off, cfg.noise, cfg.rank, seed
    )
    spec = spec_of(cfg, p)
    torch.manual_seed(seed)
    gates = method == "gates"
    if gates:
        student = gated_student(p, cfg.sigma, cfg.reg_sigma, cfg.init_mean, cfg.init_std)
        planted = torch.cat([p.rows_off, p.cols_off])
        track = torch.cat([planted.nonzero()[:6, 0], (~planted).nonzero()[:6, 0]])
    elif method == "lora":
        student = lora_student(p, cfg.lora_r, cfg.lora_alpha)
    else:
        raise ValueError(f"method must be 'gates' or 'lora', got {method!r}")
    if cfg.grad not in ("sampled", "exact"):
        raise ValueError(f"grad must be 'sampled' or 'exact', got {cfg.grad!r}")
    opt_name = cfg.optimizer
    if opt_name not in LR:
        raise ValueError(f"optimizer must be one of {sorted(LR)}, got {opt_name!r}")
    lr = (cfg.lr or LR[opt_name]) if gates else (cfg.lora_lr or LORA_LR[opt_name])
    params = [q for q in student.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=lr) if opt_name == "adam" else torch.optim.SGD(params, lr=lr)
    tr, marks = Trace(method, seed), set(eval_steps(cfg.steps, cfg.evals))
    g = torch.Generator().manual_seed(10_000 + seed)
    student.train()

    def record(t: int) -> None:
        if t in marks:
            F, se, gsq = objective_and_grad(student, p, spec)
            tr.step.append(t), tr.F.append(F), tr.se.append(se), tr.grad_sq.append(gsq)
            if gates:
                b, pr, rc = recovery(student, p)
                tr.binary.append(b), tr.precision.append(pr), tr.recall.append(rc)
                tr.gates.append(torch.cat(gated_layer(student).eval_gates())[track].tolist())

    if cfg.grad == "exact":
        batches, objective = (None for _ in range(cfg.steps)), None  # descent on F itself (it holds the penalty)
        loss_fn = lambda s, _: expected_objective(s, p, spec)[0]  # noqa: E731
    else:
        batches = (
            torch.randperm(p.X.shape[0], generator=g)[: cfg.batch] if cfg.batch else slice(None)
            for _ in range(cfg.steps)
        )
        loss_fn = lambda s, idx: ((s(p.X[idx]) - p.Y[idx]) ** 2).mean()  # noqa: E731
        objective = (
            Objective(spec.lam, spec.objective, None if spec.objective == "l0" else spec.target)
            if gates and spec.lam
            else None
        )
    bar = tqdm(total=cfg.steps, desc=f"{cfg.problem} {method} seed {seed}", disable=not progress, leave=False)
    record(0)
    train_loop(
        student,
        batches,
        loss_fn,
        opt,
        objective=objective,
        total=cfg.steps,
        after=lambda out: record(out.step) or bar.update(1),
        label=f"{cfg.problem} {method} seed {seed}",
    )
    bar.close()
    if gates:
        tr.gates = {"planted_closed": planted[track].tolist(), "values": tr.gates}
    reference(tr, student, p, cfg, spec)
    return tr


RESOLVED = 1e-10  # a gap below this (relative to max(1, |F*|)) is rounding, not signal: no PL ratio there


def _gaps(tr: Trace) -> np.ndarray:
    """F - F*, with exact zeros (the path's own minimum) floored at float64 resolution."""
    floor = 1e-15 * max(1.0, abs(tr.F_star))
    return np.maximum(np.asarray(tr.F) - tr.F_star, floor)


def _band(a: np.ndarray, log: bool) -> dict:
    """Center (geometric mean if log) and min/max over seeds, NaN-aware; NaN is written as null."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a step where no seed has a value stays NaN
        c = 10 ** np.nanmean(np.log10(a), 0) if log else np.nanmean(a, 0)
        rows = {"center": c, "lo": np.nanmin(a, 0), "hi": np.nanmax(a, 0)}
    return {k: [float(x) if np.isfinite(x) else None for x in v] for k, v in rows.items()}


def rates(step, gap, grad_sq) -> dict:
    """Convergence rates of one path.

    loglog_slope: p in gap ~ t^-p over the last decade of steps (1: O(1/t), large: faster than any power);
    decades_per_1000_steps: the linear-rate fit over the same window;
    lojasiewicz: theta in ||grad F|| ~ gap^theta on the late path (PL means theta <= 1/2; theta = 1 means
    the PL ratio shrinks like the gap itself); None where the late gap spans less than a decade.
    """
    step, lg, lgr = np.asarray(step, float), np.log10(gap), 0.5 * np.log10(grad_sq)
    tail = step >= max(1.0, step[-1] / 10)
    late = step >= step[-1] / 100
    hit = np.nonzero(lg <= lg[0] - 3)[0]
    spans = np.ptp(lg[late]) >= 1  # theta is only defined where the late gap moves by a decade or more
    return {
        "loglog_slope": float(-np.polyfit(np.log10(step[tail]), lg[tail], 1)[0]),
        "decades_per_1000_steps": float(-np.polyfit(step[tail], lg[tail], 1)[0] * 1000),
        "lojasiewicz": float(np.polyfit(lg[late], lgr[late], 1)[0]) if spans else None,
        "decades_total": float(lg[0] - lg[-1]),
        "decades_best": float(lg[0] - lg.min()),
        "steps_to_3_decades": int(step[hit[0]]) if len(hit) else None,
    }


def summarize(traces: list[Trace]) -> dict:
    """Curves over seeds (geometric mean and range for gaps/gradients, mean and range otherwise) + finals."""
    gaps = np.stack([_gaps(t) for t in traces])
    gsq = np.stack([np.maximum(t.grad_sq, 1e-300) for t in traces])
    resolved = gaps > RESOLVED * np.maximum(1.0, np.abs([[t.F_star] for t in traces]))
    pl = np.where(resolved, gsq / (2 * gaps), np.nan)
    out = {
        "step": traces[0].step,
        "gap": _band(gaps, True),
        "grad_sq": _band(gsq, True),
        "pl_ratio": _band(pl, True),
        "F_star": [t.F_star for t in traces],
        "F_candidates": [t.F_candidates for t in traces],
        "max_se": max(max(t.se) for t in traces),
    }
    out["rates"] = [rates(t.step, g, q) for t, g, q in zip(traces, gaps, gsq)]
    # PL constant along the path: the smallest ratio once the first 1% of steps are done, where the gap is resolved
    late = np.asarray(traces[0].step) >= traces[0].step[-1] / 100
    out["pl_min_after_1pct"] = [float(np.nanmin(r[late])) if np.isfinite(r[late]).any() else None for r in pl]
    if traces[0].method == "gates":
        for k in ("binary", "precision", "recall"):
            out[k] = _band(np.array([getattr(t, k) for t in traces]), False)
        out["final"] = [
            {"seed": t.seed, "binary": t.binary[-1], "precision": t.precision[-1], "recall": t.recall[-1]}
            for t in traces
        ]
        out["trajectories_seed0"] = traces[0].gates
        planted_gap = [t.F_candidates["planted"] - t.F_star for t in traces]
        out["planted_minus_Fstar"] = planted_gap  # > 0: the optimum closes other gates than the planted ones
        out["planted_polished"] = [t.planted_polished for t in traces]  # does L-BFGS from the planted point keep it?
    return out


def run(cfg: ConvergenceConfig, sweep: str | None = None, values=(None,), progress: bool = True) -> dict:
    """Every setting of the sweep (`sweep` a field, set to each of `values`) x every method x every seed;
    returns the results dict (no file)."""
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention (measured 30x slower steps)
    groups = []
    for v in values:
        c = replace(cfg, **{sweep: v}) if sweep else cfg
        methods = [m.strip() for m in c.methods.split(",") if m.strip()]
        groups.append(
            {
                "value": v,
                "config": asdict(c),
                "methods": {m: summarize([train(c, s, m, progress) for s in range(c.seeds)]) for m in methods},
            }
        )
    return {"sweep": sweep, "groups": groups}


def write(cfg: ConvergenceConfig, res: dict, out=None, sweep: str | None = None) -> Path:
    """The results file of `run` (default results/convergence/<problem>[_<sweep>].json), with provenance."""
    out = out or study_results("convergence") / f"{cfg.problem}{'_' + sweep if sweep else ''}.json"
    return write_json(out, {**provenance(asdict(cfg), seed=list(range(cfg.seeds)), device="cpu"), **res})


@dataclass(frozen=True)
class SweepOptions:
    """The command line beyond the config: the option to vary and its values, the results file, the progress bars."""

    sweep: str | None = option(
        None,
        "one option to vary, spelled with underscores (e.g. reg_sigma); the run repeats for each of --values; "
        "None: no sweep",
        metavar="OPTION",
    )
    values: tuple | None = option(None, "values of the --sweep option", nargs="*")
    out: str | None = option(None, "results file; None: results/convergence/<problem>[_<sweep>].json")
    no_progress: bool = option(False, "hide the progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.convergence", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(ap, ConvergenceConfig)
    add_options(ap, SweepOptions, choices={"sweep": sorted(f.name for f in fields(ConvergenceConfig))})
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    cfg, opts = from_args(ConvergenceConfig, args), from_args(SweepOptions, args)
    if (opts.sweep is None) != (not opts.values):
        ap.error("--sweep and --values go together: name the option and give at least one value")
    values = [type(getattr(cfg, opts.sweep))(v) for v in opts.values] if opts.sweep else [None]
    res = run(cfg, opts.sweep, values, progress=not opts.no_progress)
    out = write(cfg, res, opts.out, opts.sweep)
    print(summary_table(out))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
