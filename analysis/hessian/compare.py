"""The gates-vs-LoRA Hessian comparison on MiniLM: the sweep as configs, and its command line (docs/design.md §4, §11).

    python -m analysis.hessian.compare --list                       # every run's command, nothing run
    python -m analysis.hessian.compare --part slice                 # issue 13's first slice (~8 min, 1 thread)
    python -m analysis.hessian.compare --part full --checkpoints results/hessian/checkpoints   # once converged
    python -m analysis.hessian.compare --timing                      # eigvalsh cost (results/hessian/exact_timing.json)

Each run is one HessianConfig (analysis.hessian.study), written with its exact command to results/hessian/.
Parts:
  exact, lanczos, r8, power, seeds   the earlier layer-5 runs (gates vs LoRA r=1 on W_v, n = 768 each; r=8 on q,v)
  slice     SST-2 at init, gates-all (n = 41,472) vs lora-qv (n = 73,728), Lanczos + SLQ, in theta and per unit dW;
            superseded by `full` (its files are not kept)
  full      SST-2 and MRPC (pairs: 128 tokens), seeds 0-2, gates-all / lora-qv / matched (LoRA r=1 on all six,
            n = 41,472), at init and at the converged checkpoints <dir>/<task>_<preset>_seed<k>.pt, raw and per
            unit dW; gates with 8 draws and with the training penalty (--penalty as-trained) at the checkpoints;
            60 SLQ steps
Its tables: analysis/hessian/tables.py (full_sets.md, written by `make figures`); its figures: hessian/plots.py.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

from analysis import doc_blocks
from analysis.cli import add_options, from_args, option
from analysis.constants import RESULTS, ROOT, repo_path, study_results
from analysis.provenance import command, provenance, read_record, write_json

from .records import load
from .study import HessianConfig, analyze, run, to_argv

OUT = study_results("hessian")
CHECKPOINTS = OUT / "checkpoints"
V5, QV5 = r"layer\.5\.attention\.self\.value", r"layer\.5\.attention\.self\.(query|value)"
COMMON = HessianConfig(examples=8, noise_draws=2, dtype="float64")
SETTINGS = {
    "gates_v5": dict(method="gates", targets=(V5,)),
    "lora1_v5": dict(method="lora", lora_r=1, targets=(V5,)),
    "gates_qv5": dict(method="gates", targets=(QV5,)),
    "lora8_qv5": dict(method="lora", lora_r=8, targets=(QV5,)),
}


def _layer5(task, setting, state, spectrum, seed=0, suffix="", **kw) -> tuple[str, HessianConfig]:
    name = f"{task}_{setting}_{state}_seed{seed}{suffix}"
    train = (
        dict(train_steps=100, save_checkpoint=repo_path(CHECKPOINTS / f"{task}_{setting}_seed{seed}.pt"))
        if state == "trained"
        else {}
    )
    return name, replace(
        COMMON,
        task=task,
        **SETTINGS[setting],
        spectrum=tuple(spectrum.split()),
        seed=seed,
        out=repo_path(OUT / f"{name}.json"),
        **train,
        **kw,
    )


def _preset(
    task, preset, state, seed, weight=False, checkpoints=CHECKPOINTS, slq_steps=30, **kw
) -> tuple[str, HessianConfig]:
    ckpt = Path(checkpoints) / f"{task}_{preset}_seed{seed}.pt" if state == "converged" else None
    cfg = replace(
        COMMON,
        task=task,
        adapters=preset,
        spectrum=("lanczos", "slq"),
        slq_steps=slq_steps,
        slq_probes=3,
        seed=seed,
        precondition="weight" if weight else "none",
        checkpoint=repo_path(ckpt) if ckpt else "",
        **kw,
    )
    return cfg.name(state), replace(cfg, out=repo_path(OUT / f"{cfg.name(state)}.json"))


def _full_settings(task, preset, state) -> dict:
    """The full sweep's own settings: gates with 8 draws, and at the checkpoints with the penalty as trained;
    MRPC's sentence pairs at 128 tokens."""
    out = {"noise_draws": 8} if preset == "gates-all" else {}
    if preset == "gates-all" and state == "converged":
        out["penalty"] = "as-trained"
    if task == "MRPC":
        out["max_length"] = 128
    return out


def plan(checkpoints=CHECKPOINTS) -> dict[str, list[tuple[str, HessianConfig]]]:
    """part -> [(output name, config)]."""
    parts = {
        "exact": [
            _layer5("SST-2", s, st, "exact", compare_power=st == "trained")
            for st in ("init", "trained")
            for s in ("gates_v5", "lora1_v5")
        ]
    }
    parts["lanczos"] = [
        _layer5("CoLA", s, st, "lanczos slq") for st in ("init", "trained") for s in ("gates_v5", "lora1_v5")
    ]
    parts["r8"] = [
        _layer5("SST-2", s, st, "lanczos slq") for st in ("init", "trained") for s in ("gates_qv5", "lora8_qv5")
    ]
    parts["power"] = [
        _layer5("CoLA", s, "trained", "lanczos", suffix="_power", compare_power=True) for s in ("gates_v5", "lora1_v5")
    ]
    parts["seeds"] = [
        _layer5("CoLA", s, st, "slq", seed=1) for st in ("init", "trained") for s in ("gates_v5", "lora1_v5")
    ]
    parts["slice"] = [_preset("SST-2", p, "init", 0, w) for w in (False, True) for p in ("gates-all", "lora-qv")]
    # full: 60 SLQ steps, as the slice's negative counts in theta and in dW (equal by Sylvester's law) differed by ~20%
    parts["full"] = [
        _preset(t, p, st, seed, w, checkpoints, 60, **_full_settings(t, p, st))
        for t in ("SST-2", "MRPC")
        for seed in (0, 1, 2)
        for st in ("init", "converged")
        for p in ("gates-all", "lora-qv", "matched")
        for w in (False, True)
    ]
    return parts


def exact_timing(sizes=(1024, 2048, 4096, 8192), seed: int = 0) -> dict:
    """Wall time of the two parts of `exact`: products (measured in the committed exact runs) and eigvalsh
    of a dense symmetric float64 matrix (measured here); the total at MAX_EXACT_N is extrapolated (n^3)."""
    import time

    import torch

    from gatecore.hessian import MAX_EXACT_N

    g = torch.Generator().manual_seed(seed)
    eig = {}
    for n in sizes:
        A = torch.randn(n, n, generator=g, dtype=torch.float64)
        A = A + A.T
        t = time.perf_counter()
        torch.linalg.eigvalsh(A)
        eig[n] = time.perf_counter() - t
    runs = [r for r in load(RESULTS) if any(x["method"] == "exact" for x in r["reports"])]
    per_product = {
        r["name"]: next(x["wall_s"] / x["products"] for x in r["reports"] if x["method"] == "exact") for r in runs
    }
    big, top = MAX_EXACT_N, max(sizes)
    rec = {
        "eigvalsh_s": eig,
        "exact_runs_s_per_product": per_product,
        "eigvalsh_s_at_max_exact_n": eig[big] if big in eig else None,
        "eigvalsh_s_at_max_exact_n_extrapolated": eig[top] * (big / top) ** 3,
        "max_exact_n": big,
        "note": "exact at n costs n products (s/product above, for MiniLM layer 5, 8 examples) plus eigvalsh(n)",
    }
    return write_json(OUT / "exact_timing.json", {**provenance({"sizes": list(sizes)}, seed, "cpu"), **rec})


def timing_block(results_dir) -> str | None:
    """docs/results.md's table of <results_dir>/hessian/exact_timing.json (None without it): eigvalsh seconds per n,
    and seconds per Hessian-vector product of the exact runs."""
    path = study_results("hessian", results_dir) / "exact_timing.json"
    rec = read_record(path)
    if rec is None:
        return None
    eig = doc_blocks.table(["n", "eigvalsh, s"], [[f"{int(n):,}", f"{s:.2f}"] for n, s in rec["eigvalsh_s"].items()])
    runs = rec["exact_runs_s_per_product"].items()
    products = doc_blocks.table(["exact run", "s per product"], [[f"`{name}`", f"{s:.3f}"] for name, s in runs])
    note = f"Largest n `exact` accepts: {rec['max_exact_n']:,}. {rec['note'][:1].upper()}{rec['note'][1:]}; {rec['threads']} thread(s)."
    return f"{eig}\n\n{products}\n\n{note} {doc_blocks.source(path, rec, __name__)}"


@dataclass(frozen=True)
class CompareConfig:
    part: tuple = option((), "which part(s) of the sweep to run")
    list: bool = option(False, "print the commands of every part (or of --part) and exit")
    skip_done: bool = option(False, "skip runs whose results file exists")
    checkpoints: Path = option(
        CHECKPOINTS, "folder of converged checkpoints <task>_<preset>_seed<k>.pt for --part full"
    )
    timing: bool = option(False, "time eigvalsh at growing n (results/hessian/exact_timing.json)")
    timing_sizes: tuple = option(
        (1024, 2048, 4096, 8192), "matrix sizes for --timing (the largest exact n is gatecore.hessian.MAX_EXACT_N)"
    )


def run_parts(cfg: CompareConfig) -> None:
    """The eigvalsh timing if asked; then each run of the chosen parts (every part if none is chosen): its
    command with `list`, else the run (a done one skipped with `skip_done`)."""
    if cfg.timing:
        print(f"wrote {exact_timing(cfg.timing_sizes)}")
    for part, runs in plan(cfg.checkpoints).items():
        if cfg.part and part not in cfg.part:
            continue
        for name, hcfg in runs:
            if cfg.list:
                print(f"[{part}] {command('analysis.hessian', to_argv(hcfg))}")
            elif cfg.skip_done and (ROOT / hcfg.out).exists():
                continue
            elif hcfg.checkpoint and not (ROOT / hcfg.checkpoint).exists():  # e.g. `matched`: never trained
                print(f"== {part}: {name}: skipped, no checkpoint {hcfg.checkpoint}", flush=True)
            else:
                print(f"== {part}: {name}", flush=True)
                run(hcfg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.hessian.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(ap, CompareConfig, choices={"part": list(plan())}, items={"timing_sizes": int})
    cfg = from_args(CompareConfig, ap.parse_args(argv))
    if not (cfg.list or cfg.part or cfg.timing):
        ap.error("nothing to do: pass --part ..., --timing or --list")
    run_parts(cfg)
    return 0


def demo(large: bool = False, small: bool = False, task: str = "SST-2") -> list[dict]:
    """The notebook's own runs (nothing written to results/): gates vs LoRA r=1 on the layer-5 value matrix.
    small: 4 examples, short SLQ; default: 8 examples, Lanczos + SLQ at init; large: exact, init and trained."""
    spec = dict(spectrum=("slq",), slq_steps=10, slq_probes=2) if small else dict(spectrum=("lanczos", "slq"))
    if large:
        spec = dict(spectrum=("exact",))
    recs = []
    for state in ["init", "trained"] if large else ["init"]:
        for setting in ("gates_v5", "lora1_v5"):
            cfg = replace(
                COMMON,
                task=task,
                **SETTINGS[setting],
                examples=4 if small else 8,
                **spec,
                train_steps=100 if state == "trained" else 0,
            )
            rec = analyze(cfg, progress=False)
            rec["name"] = f"{task}_{setting}_{state} (notebook)"
            recs.append(rec)
    return recs


if __name__ == "__main__":
    raise SystemExit(main())
