"""The gates-vs-LoRA Hessian comparison on MiniLM: the sweep as configs, its tables (docs/design.md §4, §11).

    python -m analysis.hessian.compare --list                       # every run's command, nothing run
    python -m analysis.hessian.compare --part slice                 # issue 13's first slice (~8 min, 1 thread)
    python -m analysis.hessian.compare --part full --checkpoints results/hessian/checkpoints   # once converged
    python -m analysis.hessian.compare --timing                      # eigvalsh cost (results/hessian/exact_timing.json)

Each run is one HessianConfig (analysis.hessian.study), written with its exact command to results/hessian/.
Parts:
  exact, lanczos, r8, power, seeds   the earlier layer-5 runs (gates vs LoRA r=1 on W_v, n = 768 each; r=8 on q,v)
  slice     SST-2 at init, gates-all (n = 41,472) vs lora-qv (n = 73,728), Lanczos + SLQ, in theta and per unit dW
  full      SST-2 and MRPC (pairs: 128 tokens), seeds 0-2, gates-all / lora-qv / matched (LoRA r=1 on all six, n = 41,472), at init and
            at the converged checkpoints <dir>/<task>_<preset>_seed<k>.pt, raw and per unit dW; gates with 8 draws
            and with the training penalty (--penalty as-trained) at the checkpoints; 60 SLQ steps (names end _S60_)
Tables: `full_table` (gates-all vs lora-qv per task / state / seed / parametrization, with the verdict of
docs/design.md §11 item 1 over 14 points of the curves), written by `make figures` to results/hessian/full_sets.md.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from analysis.constants import RESULTS, ROOT, repo_path, study_results
from analysis.provenance import command

from .plots import load, make_figures  # noqa: F401  (make figures imports this module)
from .study import HessianConfig, run, to_argv

OUT = study_results("hessian")
CHECKPOINTS = OUT / "checkpoints"
V5, QV5 = r"layer\.5\.attention\.self\.value", r"layer\.5\.attention\.self\.(query|value)"
COMMON = HessianConfig(examples=8, noise_draws=2, dtype="float64")
SETTINGS = {"gates_v5": dict(method="gates", targets=(V5,)), "lora1_v5": dict(method="lora", lora_r=1, targets=(V5,)),
            "gates_qv5": dict(method="gates", targets=(QV5,)), "lora8_qv5": dict(method="lora", lora_r=8, targets=(QV5,))}
PRESET_NAMES = {"gates-all": "gatesall", "lora-qv": "loraqv", "matched": "lora1all"}


def _layer5(task, setting, state, spectrum, seed=0, suffix="", **kw) -> tuple[str, HessianConfig]:
    name = f"{task}_{setting}_{state}_seed{seed}{suffix}"
    train = dict(train_steps=100, save_checkpoint=repo_path(CHECKPOINTS / f"{task}_{setting}_seed{seed}.pt")) \
        if state == "trained" else {}
    return name, replace(COMMON, task=task, **SETTINGS[setting], spectrum=tuple(spectrum.split()), seed=seed,
                         out=repo_path(OUT / f"{name}.json"), **train, **kw)


def _preset(task, preset, state, seed, weight=False, checkpoints=CHECKPOINTS, slq_steps=30, **kw) -> tuple[str, HessianConfig]:
    draws = f"_K{kw['noise_draws']}" if "noise_draws" in kw else ""   # the slice's gates use COMMON's 2 draws
    steps = f"_S{slq_steps}" if slq_steps != 30 else ""                 # the slice's 30 SLQ steps: no suffix
    name = f"{task}_{PRESET_NAMES[preset]}{'_dW' if weight else ''}{draws}{steps}_{state}_seed{seed}"
    ckpt = Path(checkpoints) / f"{task}_{preset}_seed{seed}.pt" if state == "converged" else None
    return name, replace(COMMON, task=task, adapters=preset, spectrum=("lanczos", "slq"), slq_steps=slq_steps, slq_probes=3, seed=seed,
                         precondition="weight" if weight else "none", out=repo_path(OUT / f"{name}.json"),
                         checkpoint=repo_path(ckpt) if ckpt else "", **kw)


def plan(checkpoints=CHECKPOINTS) -> dict[str, list[tuple[str, HessianConfig]]]:
    """part -> [(output name, config)]."""
    parts = {"exact": [_layer5("SST-2", s, st, "exact", compare_power=st == "trained")
                       for st in ("init", "trained") for s in ("gates_v5", "lora1_v5")]}
    parts["lanczos"] = [_layer5("CoLA", s, st, "lanczos slq") for st in ("init", "trained") for s in ("gates_v5", "lora1_v5")]
    parts["r8"] = [_layer5("SST-2", s, st, "lanczos slq") for st in ("init", "trained") for s in ("gates_qv5", "lora8_qv5")]
    parts["power"] = [_layer5("CoLA", s, "trained", "lanczos", suffix="_power", compare_power=True) for s in ("gates_v5", "lora1_v5")]
    parts["seeds"] = [_layer5("CoLA", s, st, "slq", seed=1) for st in ("init", "trained") for s in ("gates_v5", "lora1_v5")]
    parts["slice"] = [_preset("SST-2", p, "init", 0, w) for w in (False, True) for p in ("gates-all", "lora-qv")]
    # full: 60 SLQ steps, as the slice's negative counts in theta and in dW (equal by Sylvester's law) differed by ~20%
    parts["full"] = [_preset(t, p, st, seed, w, checkpoints, 60, **({"noise_draws": 8} if p == "gates-all" else {}),
                             **({"penalty": "as-trained"} if st == "converged" and p == "gates-all" else {}),
                             **({"max_length": 128} if t == "MRPC" else {}))
                     for t in ("SST-2", "MRPC") for seed in (0, 1, 2) for st in ("init", "converged")
                     for p in ("gates-all", "lora-qv", "matched") for w in (False, True)]
    return parts


def exact_timing(sizes=(1024, 2048, 4096, 8192), seed: int = 0) -> dict:
    """Wall time of the two parts of `exact`: products (measured in the committed exact runs) and eigvalsh
    of a dense symmetric float64 matrix (measured here); the total at MAX_EXACT_N is extrapolated (n^3)."""
    import time
    import torch
    from analysis.provenance import provenance, write_json
    g = torch.Generator().manual_seed(seed)
    eig = {}
    for n in sizes:
        A = torch.randn(n, n, generator=g, dtype=torch.float64)
        A = A + A.T
        t = time.perf_counter()
        torch.linalg.eigvalsh(A)
        eig[n] = time.perf_counter() - t
    runs = [r for r in load(RESULTS) if any(x["method"] == "exact" for x in r["reports"])]
    per_product = {r["name"]: next(x["wall_s"] / x["products"] for x in r["reports"] if x["method"] == "exact") for r in runs}
    from gatecore.hessian import MAX_EXACT_N
    big, top = MAX_EXACT_N, max(sizes)
    rec = {"eigvalsh_s": eig, "exact_runs_s_per_product": per_product,
           "eigvalsh_s_at_max_exact_n": eig[big] if big in eig else None,
           "eigvalsh_s_at_max_exact_n_extrapolated": eig[top] * (big / top) ** 3, "max_exact_n": big,
           "note": "exact at n costs n products (s/product above, for MiniLM layer 5, 8 examples) plus eigvalsh(n)"}
    return write_json(OUT / "exact_timing.json", {**provenance({"sizes": list(sizes)}, seed, "cpu"), **rec})




def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.hessian.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=list(plan()), nargs="+", default=[], help="which part(s) of the sweep to run")
    ap.add_argument("--list", action="store_true", help="print the commands of every part (or of --part) and exit")
    ap.add_argument("--skip-done", action="store_true", help="skip runs whose results file exists")
    ap.add_argument("--checkpoints", type=Path, default=CHECKPOINTS,
                    help="folder of converged checkpoints <task>_<preset>_seed<k>.pt for --part full (default: %(default)s)")
    ap.add_argument("--timing", action="store_true", help="time eigvalsh at growing n (results/hessian/exact_timing.json)")
    ap.add_argument("--timing-sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192],
                    help="matrix sizes for --timing (default: %(default)s; the largest exact n is gatecore.hessian.MAX_EXACT_N)")
    args = ap.parse_args(argv)
    if not (args.list or args.part or args.timing):
        ap.error("nothing to do: pass --part ..., --timing or --list")
    if args.timing:
        print(f"wrote {exact_timing(tuple(args.timing_sizes))}")
    for part, runs in plan(args.checkpoints).items():
        if args.part and part not in args.part:
            continue
        for name, cfg in runs:
            if args.list:
                print(f"[{part}] {command('analysis.hessian', to_argv(cfg))}")
            elif args.skip_done and (ROOT / cfg.out).exists():
                continue
            elif cfg.checkpoint and not (ROOT / cfg.checkpoint).exists():   # e.g. `matched`: never trained
                print(f"== {part}: {name}: skipped, no checkpoint {cfg.checkpoint}", flush=True)
            else:
                print(f"== {part}: {name}", flush=True)
                run(cfg)
    return 0


def records_table(recs: list[dict]) -> str:
    """One line per (run, spectrum method): the numbers of docs/design.md §4."""
    lines = [f"{'run':<34} {'method':<9} {'n':>6} {'Hv':>5} {'lambda_max':>11} {'lambda_min':>11} {'neg':>7} {'zero':>7} "
             f"{'kappa_eff':>10} {'saturated':>9}"]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for rec in recs:
        s = rec["setting"]
        name = rec.get("name") or f"{s['task']}_{s['method']}_{s['state'].split()[0]}"
        for r in rec["reports"]:
            lines.append(f"{name:<34} {r['method']:<9} {r['n']:>6} {r['products']:>5} {fmt(r['lambda_max'], '11.3e')} "
                         f"{fmt(r['lambda_min'], '11.3e')} {fmt(r['n_negative'], '7.0f')} {fmt(r['n_zero'], '7.0f')} "
                         f"{fmt(r['kappa_eff'], '10.3g')} {fmt(s.get('n_saturated_gates'), '9d')}")
    return "\n".join(lines)


def summary_table(results_dir) -> str:
    return records_table(load(results_dir))


# ---- the full adapter sets: gates-all vs lora-qv, init vs converged, theta vs dW (docs/design.md §11) ----------------
FULL = ("gates-all", "lora-qv")
# kappa_eff(tol) is compared from tol 1e-3 up only: from an SLQ density, values below the node standing for the zero
# cluster (~1e-3 relative, SLQ_COUNT_TOL) mean nothing (§11); [1e-6, 1e-3) needs exact spectra, not available at n > 2e4
VERDICT_TOLS = (1e-3, 1e-2, 1e-1)
VERDICT_KS = (2, 4, 8, 16, 32, 64, 128, 256)
VERDICT_FRACTIONS = (0.5, 0.9, 0.99)


def full_pairs(recs: list[dict]) -> dict[tuple, dict[str, dict]]:
    """(task, state, seed, 'theta'|'dW', SLQ steps) -> {preset: record} for the preset runs (gates-all, lora-qv, matched)."""
    from .plots import group_key
    out = {}
    for r in recs:
        if r["setting"].get("adapters"):
            task, _, state, seed, par, steps = group_key(r)
            out.setdefault((task, state, seed, par, steps), {})[r["setting"]["adapters"]] = r
    return out


def negative_mass(rec: dict) -> float | None:
    """sum |lambda < 0| / sum |lambda| over the spectrum (SLQ density with its deflated block, or exact)."""
    from .plots import mass
    m = mass(rec)
    if m is None:
        return None
    v, w, _ = m
    tot = float((np.abs(v) * w).sum())
    return float((np.abs(v[v < 0]) * w[v < 0]).sum() / tot) if tot > 0 else None


def curve_points(rec: dict) -> dict[str, float]:
    """The compared points of one record: kappa_eff at VERDICT_TOLS, lambda_1/lambda_k at VERDICT_KS, lambda_1/lambda_k(f)
    at VERDICT_FRACTIONS; inf where the set reaches a zero or negative eigenvalue (no finite kappa over it)."""
    from .plots import record_conditioning
    c = record_conditioning(rec)
    inf = lambda x: float("inf") if x is None else x  # noqa: E731
    pts = {f"tol {t:g}": inf(k) for t, k in zip(c.curve.tols, c.curve.kappa) if any(np.isclose(t, VERDICT_TOLS))}
    pts.update({f"k {k}": inf(x) for k, x in zip(c.matched.ks, c.matched.kappa_top) if k in VERDICT_KS})
    pts.update({f"f {f:g}": inf(x) for f, x in zip(c.matched.fractions, c.matched.kappa_mass) if f in VERDICT_FRACTIONS})
    return pts


def dominance(a: dict, b: dict) -> tuple[int, int, int]:
    """(points where a < b, where a > b, where equal) over the common points of curve_points where both are finite:
    a top-k set past either side's positive eigenvalues is beyond the smaller active set (§11), not compared."""
    lo = hi = tie = 0
    for key in a.keys() & b.keys():
        x, y = a[key], b[key]
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        if x < y:
            lo += 1
        elif x > y:
            hi += 1
        else:
            tie += 1
    return lo, hi, tie


def probe_points(rec: dict) -> list[dict[str, float]]:
    """curve_points of each SLQ probe's density alone: their spread is the estimate's own scatter."""
    d = (rec.get("densities") or {}).get("slq")
    if not d:
        return [curve_points(rec)]
    return [curve_points({**rec, "densities": {"slq": {"nodes": [n], "weights": [w]}}})
            for n, w in zip(d["nodes"], d["weights"])]


def verdict(g: dict, l: dict) -> str:
    """Item 1 over the compared points: where the gates' estimate is lower, and at how many of those the probes agree
    (every gates probe below every LoRA probe; likewise for higher)."""
    a, b = curve_points(g), curve_points(l)
    lo, hi, tie = dominance(a, b)
    n = lo + hi + tie
    pa, pb = probe_points(g), probe_points(l)
    keys = [k for k in a.keys() & b.keys() if np.isfinite(a[k]) and np.isfinite(b[k])]
    span = lambda ps, k: [p[k] for p in ps if np.isfinite(p.get(k, np.inf))] or [np.inf]  # noqa: E731
    sure_lo = sum(max(span(pa, k)) < min(span(pb, k)) for k in keys if a[k] < b[k])
    sure_hi = sum(min(span(pa, k)) > max(span(pb, k)) for k in keys if a[k] > b[k])
    if lo == n:
        return f"gates lower at all {n} ({sure_lo} beyond the probe spread)"
    if hi == n:
        return f"LoRA lower at all {n} ({sure_hi} beyond the probe spread)"
    return f"cross: gates lower at {lo}/{n} ({sure_lo} beyond the probe spread), higher at {hi} ({sure_hi})"


def full_table(results_dir, markdown: bool = False) -> str:
    """gates-all vs lora-qv per task / state / seed / parametrization: extremes, negative mass, kappa at tolerances,
    matched top-k and mass-fraction kappas, and which curve lies lower (docs/design.md §11, item 1)."""
    pairs = full_pairs(load(results_dir))
    cols = ["task", "state", "seed", "in", "SLQ", "method", "n", "analysed", "lambda_max", "lambda_min", "neg. mass",
            *[f"kappa tol {t:g}" for t in VERDICT_TOLS], "kappa k=8", "kappa k=64", "kappa k=256",
            *[f"kappa f={f:g}" for f in VERDICT_FRACTIONS], "item 1 (gates vs LoRA)"]
    fmt = lambda v: "-" if v is None else ("inf" if v == float("inf") else f"{v:.3g}")  # noqa: E731
    rows = []
    state_order = {"init": 0, "converged": 1}
    for key in sorted(pairs, key=lambda k: (k[0], k[2], state_order.get(k[1], 2), k[3], k[4])):
        task, state, seed, par, steps = key
        group = pairs[key]
        v = verdict(group["gates-all"], group["lora-qv"]) if all(p in group for p in FULL) else "-"
        for preset in (*FULL, "matched"):
            r = group.get(preset)
            if r is None:
                continue
            s = r["setting"]
            ends = next(x for x in r["reports"] if x["method"] in ("lanczos", "exact", "slq"))
            pts = curve_points(r)
            label = "gates" + (f" K={s['noise_draws']}" + (" +pen" if s.get("penalty") else "")) if s["method"] == "gates" \
                else f"LoRA r={s['lora_r']}" + (" (matched)" if preset == "matched" else "")
            rows.append([task, state, str(seed), par, steps.replace("SLQ ", ""), label, str(s["n"]), str(s["n"] - s["deflated"]),
                         fmt(ends["lambda_max"]), fmt(ends["lambda_min"]), fmt(negative_mass(r)),
                         *[fmt(pts[f"tol {t:g}"]) for t in VERDICT_TOLS], fmt(pts["k 8"]), fmt(pts["k 64"]), fmt(pts["k 256"]),
                         *[fmt(pts[f"f {f:g}"]) for f in VERDICT_FRACTIONS], v if preset == "gates-all" else ""])
    if markdown:
        return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in rows])
    width = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(r, width)) for r in [cols, *rows])


def demo(large: bool = False, small: bool = False, task: str = "SST-2") -> list[dict]:
    """The notebook's own runs (nothing written to results/): gates vs LoRA r=1 on the layer-5 value matrix.
    small: 4 examples, short SLQ; default: 8 examples, Lanczos + SLQ at init; large: exact, init and trained."""
    from .study import analyze
    spec = dict(spectrum=("slq",), slq_steps=10, slq_probes=2) if small else dict(spectrum=("lanczos", "slq"))
    if large:
        spec = dict(spectrum=("exact",))
    recs = []
    for state in (["init", "trained"] if large else ["init"]):
        for setting in ("gates_v5", "lora1_v5"):
            cfg = replace(COMMON, task=task, **SETTINGS[setting], examples=4 if small else 8, **spec,
                          train_steps=100 if state == "trained" else 0)
            rec = analyze(cfg, progress=False)
            rec["name"] = f"{task}_{setting}_{state} (notebook)"
            recs.append(rec)
    return recs


if __name__ == "__main__":
    raise SystemExit(main())
