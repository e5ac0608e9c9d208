"""The matched gates-vs-LoRA Hessian comparison on MiniLM, and its figures.

    flock /tmp/gatecore-heavy.lock python -m analysis.hessian_compare --part exact   # each part < ~15 min here
    python -m analysis.hessian_compare --list                                        # the commands, nothing run

Every run is one `python -m analysis.hessian ...` command (recorded in its JSON under results/hessian/).
Matched: gates (rows + cols) on W_v of the last layer, n = 384 + 384 = 768, vs LoRA r = 1 on the same
matrix, n = 1 * (384 + 384) = 768; the common setting LoRA r = 8 on q, v against gates on the same q, v,
in the last layer (the backward of a product then stays in that layer: what makes exact spectra affordable
on 2 shared cores). Same examples, loss (mean pooling, cross-entropy) and seed for both methods;
"trained" = a short run through the core API, saved and reloaded through gatecore's checkpoint files.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gatecore.hessian import MAX_EXACT_N, summarize

from .provenance import ROOT, warn_if_dirty

# ---- defaults -------------------------------------------------------------------------------------------
OUT = ROOT / "results" / "hessian"
TASKS = ["SST-2", "CoLA"]
V5, QV5 = r"layer\.5\.attention\.self\.value", r"layer\.5\.attention\.self\.(query|value)"
COMMON = ["--examples", "8", "--noise-draws", "2", "--dtype", "float64"]
TRAIN = ["--train-steps", "100"]
SETTINGS = {"gates_v5": ["--method", "gates", "--targets", V5], "lora1_v5": ["--method", "lora", "--lora-r", "1", "--targets", V5],
            "gates_qv5": ["--method", "gates", "--targets", QV5], "lora8_qv5": ["--method", "lora", "--lora-r", "8", "--targets", QV5]}


def plan() -> dict[str, list[tuple[str, list[str]]]]:
    """part -> [(output name, argv of analysis.hessian)]."""
    def run(task, setting, state, spectrum, seed=0, extra=(), suffix=""):
        name = f"{task}_{setting}_{state}_seed{seed}{suffix}"
        argv = ["--task", task, *SETTINGS[setting], *COMMON, "--spectrum", *spectrum.split(), "--seed", str(seed),
                *(TRAIN if state == "trained" else []), *extra, "--out", str((OUT / f"{name}.json").relative_to(ROOT))]
        return name, argv
    parts = {"exact": [run("SST-2", s, st, "exact", extra=["--compare-power"] if st == "trained" else [])
                       for st in ("init", "trained") for s in ("gates_v5", "lora1_v5")]}
    parts["lanczos"] = [run("CoLA", s, st, "lanczos slq") for st in ("init", "trained") for s in ("gates_v5", "lora1_v5")]
    parts["r8"] = [run("SST-2", s, st, "lanczos slq") for st in ("init", "trained") for s in ("gates_qv5", "lora8_qv5")]
    parts["power"] = [run("CoLA", s, "trained", "lanczos", extra=["--compare-power"], suffix="_power") for s in ("gates_v5", "lora1_v5")]
    parts["seeds"] = [run("CoLA", s, st, "slq", seed=1) for st in ("init", "trained") for s in ("gates_v5", "lora1_v5")]
    return parts


def exact_timing(sizes=(1024, 2048, 4096, 8192), seed: int = 0) -> dict:
    """Wall time of the two parts of `exact`: products (measured in the committed exact runs) and eigvalsh
    of a dense symmetric float64 matrix (measured here); the total at MAX_EXACT_N is extrapolated (n^3)."""
    import time
    import torch
    from .provenance import provenance, write_json
    g = torch.Generator().manual_seed(seed)
    eig = {}
    for n in sizes:
        A = torch.randn(n, n, generator=g, dtype=torch.float64)
        A = A + A.T
        t = time.perf_counter()
        torch.linalg.eigvalsh(A)
        eig[n] = time.perf_counter() - t
    runs = [r for r in load(ROOT / "results") if any(x["method"] == "exact" for x in r["reports"])]
    per_product = {r["name"]: next(x["wall_s"] / x["products"] for x in r["reports"] if x["method"] == "exact") for r in runs}
    big, top = MAX_EXACT_N, max(sizes)
    rec = {"eigvalsh_s": eig, "exact_runs_s_per_product": per_product,
           "eigvalsh_s_at_max_exact_n": eig[big] if big in eig else None,
           "eigvalsh_s_at_max_exact_n_extrapolated": eig[top] * (big / top) ** 3, "max_exact_n": big,
           "note": "exact at n costs n products (s/product above, for MiniLM layer 5, 8 examples) plus eigvalsh(n)"}
    return write_json(OUT / "exact_timing.json", {**provenance({"sizes": list(sizes)}, seed, "cpu"), **rec})


def main(argv=None) -> int:
    from . import hessian
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=list(plan()), nargs="+", default=[], help="which part(s) of the sweep to run")
    ap.add_argument("--list", action="store_true", help="print the commands of every part and exit")
    ap.add_argument("--skip-done", action="store_true", help="skip runs whose results file exists")
    ap.add_argument("--timing", action="store_true", help="time eigvalsh at growing n (results/hessian/exact_timing.json)")
    ap.add_argument("--timing-sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192],
                    help="matrix sizes for --timing (default: %(default)s; the largest exact n here is gatecore.hessian.MAX_EXACT_N)")
    args = ap.parse_args(argv)
    for part, runs in plan().items():
        for name, a in runs:
            if args.list:
                print(f"[{part}] python -m analysis.hessian " + " ".join(f"'{x}'" if "\\" in x else x for x in a))
            elif part in args.part and not (args.skip_done and (ROOT / a[-1]).exists()):
                print(f"== {part}: {name}", flush=True)
                hessian.main(a)
    if args.timing:
        print(f"wrote {exact_timing(tuple(args.timing_sizes))}")
    if not (args.list or args.part or args.timing):
        ap.error("nothing to do: pass --part ..., --timing or --list")
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


def demo(large: bool = False, small: bool = False, task: str = "SST-2") -> list[dict]:
    """The notebook's own runs (nothing written to results/): gates vs LoRA r=1 on the layer-5 value matrix.
    small: 4 examples, short SLQ; default: 8 examples, Lanczos + SLQ at init; large: exact, init and trained."""
    from . import hessian
    ex, spec = ("4", ["slq", "--slq-steps", "10", "--slq-probes", "2"]) if small else ("8", ["lanczos", "slq"])
    if large:
        spec = ["exact"]
    recs = []
    for state in (["init", "trained"] if large else ["init"]):
        for setting in ("gates_v5", "lora1_v5"):
            argv = ["--task", task, *SETTINGS[setting], *COMMON, "--examples", ex, "--spectrum", *spec,
                    *(TRAIN if state == "trained" else [])]
            rec = hessian.analyze(hessian.parser().parse_args(argv), progress=False)
            rec["name"] = f"{task}_{setting}_{state} (notebook)"
            recs.append(rec)
    return recs


# ---- figures (from results/hessian/*.json only) ---------------------------------------------------------

def load(results_dir) -> list[dict]:
    out = []
    for p in sorted(Path(results_dir, "hessian").glob("*.json")):
        rec = json.loads(p.read_text())
        if "reports" in rec:
            warn_if_dirty(p, rec)
            rec["name"] = p.stem
            out.append(rec)
    return out


def mass(rec: dict) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(eigenvalues, weights summing to 1, source) from exact eigenvalues, else the SLQ nodes."""
    ev = (rec.get("eigenvalues") or {}).get("exact")
    if ev:
        ev = np.asarray(ev)
        return ev, np.full(ev.size, 1.0 / ev.size), "exact"
    d = (rec.get("densities") or {}).get("slq")
    if d:
        rep = next(r for r in rec["reports"] if r["method"] == "slq")
        k, n = rep["extra"].get("deflated_saturated", 0), rep["n"]   # SLQ ran on the n - k active coordinates
        w = np.concatenate([np.asarray(x) for x in d["weights"]]) / len(d["weights"]) * (n - k) / n
        return np.concatenate([np.concatenate([np.asarray(x) for x in d["nodes"]]), [0.0]]), np.append(w, k / n), "SLQ"
    return None


def label(rec: dict) -> str:
    s = rec["setting"]
    adapter = "gates" if s["method"] == "gates" else f"LoRA r={s['lora_r']}"
    return f"{adapter} (n={s['n']})"


def make_figures(results_dir, figures_dir) -> list[Path]:
    import matplotlib.pyplot as plt
    recs = load(results_dir)
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    if not recs:
        return []
    made = []
    groups = {}
    for r in recs:   # one panel per task / layers / state / seed, both methods overlaid
        s = r["setting"]
        key = (s["task"], "q,v" if "query" in s["targets"][0] else "v", s["state"].split(" ")[0], r["seed"])
        if mass(r) is not None:
            groups.setdefault(key, {})[s["method"]] = r
    keys = sorted(groups)
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 2.4 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        top = max(np.abs(mass(r)[0]).max() for r in groups[key].values())
        lo = 1e-6 * top   # the zero tolerance: mass inside it is reported in the legend, not drawn
        edges = np.logspace(np.log10(lo), np.log10(top * 1.01), 22)
        for method, r in sorted(groups[key].items()):
            ev, w, src = mass(r)
            ztol = 1e-6 if src == "exact" else 1e-3   # an SLQ node stands for a cluster: never within 1e-6 of 0
            zero = w[np.abs(ev) <= ztol * np.abs(ev).max()].sum()
            h = [np.histogram(sign * ev, edges, weights=w)[0] for sign in (1, -1)]
            x = np.concatenate([-edges[::-1], edges])
            yv = np.concatenate([h[1][::-1], [0], h[0]])   # the middle bin (-lo, lo) is the zero mass
            ax.stairs(yv, x, lw=1.8,
                      label=f"{label(r)} [{src}], zero mass (|lambda| <= {ztol:g} max) {zero:.0%}")
        ax.set_xscale("symlog", linthresh=lo)
        ticks = [10.0 ** k for k in range(int(np.ceil(np.log10(top))), int(np.floor(np.log10(lo))), -2)][::-1]
        ax.set_xticks([-t for t in ticks[::-1]] + ticks, [f"-1e{np.log10(t):.0f}" for t in ticks[::-1]] + [f"1e{np.log10(t):.0f}" for t in ticks], fontsize=7)
        t, layers, state, seed = key
        ax.set_title(f"{t}, layer-5 {layers}, {state}, seed {seed}: eigenvalue mass (|lambda| > 1e-6 max|lambda|)", fontsize=9)
        ax.set_ylabel("fraction of n")
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-4)
        ax.tick_params(axis="y", which="both", labelsize=7)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("eigenvalue (log scale on both sides of 0)")
    fig.suptitle("Eigenvalue densities, gates vs LoRA (MiniLM, 8 train examples, mean pooling, float64)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    made.append(figures_dir / "hessian_densities.png")
    fig.savefig(made[-1], dpi=130)
    plt.close(fig)
    made.append(summary_figure(groups, keys, figures_dir))
    return made


def summary_figure(groups, keys, figures_dir) -> Path:
    """kappa_eff, lambda_max and negative/zero fractions, side by side per setting."""
    import matplotlib.pyplot as plt
    rows = []
    for key in keys:
        for method in ("gates", "lora"):
            r = groups[key].get(method)
            if r is None:
                continue
            rep = {rp["method"]: rp for rp in r["reports"]}
            ends = rep.get("exact") or rep.get("lanczos") or rep.get("slq")
            counts = rep.get("exact") or rep.get("slq") or {}
            n = r["setting"]["n"]
            ev = (r.get("eigenvalues") or {}).get("exact")
            k3 = summarize(np.asarray(ev), 1e-3)["kappa_eff"] if ev else None
            rows.append(dict(label=f"{key[0]} {key[1]} {key[2]} s{key[3]}\n{label(r)}", method=method,
                             kappa=(rep.get("exact") or {}).get("kappa_eff"), kappa3=k3, lmax=ends["lambda_max"],
                             neg=(counts.get("n_negative") or 0) / n, zero=(counts.get("n_zero") or 0) / n,
                             est=counts.get("counts_estimated", False)))
    fig, axes = plt.subplots(1, 5, figsize=(17, 0.45 * len(rows) + 2), sharey=True)
    y = np.arange(len(rows))
    colors = ["tab:blue" if r["method"] == "gates" else "tab:orange" for r in rows]
    for ax, key, title, log in zip(axes, ("kappa", "kappa3", "lmax", "neg", "zero"),
                                   ("kappa_eff, tol 1e-6 (exact only)", "kappa_eff, tol 1e-3 (exact only)", "lambda_max",
                                    "negative eigenvalues / n", "zero eigenvalues / n (|lambda| <= tol max|lambda|)"),
                                   (True, True, True, False, False)):
        vals = [r[key] if r[key] is not None and r[key] > 0 or key in ("neg", "zero") else np.nan for r in rows]
        ax.barh(y, vals, color=colors)
        for yi, v, r in zip(y, vals, rows):
            txt = "n/a" if np.isnan(v) else (f"{v:.3g}" + (" (SLQ est.)" if r["est"] and key in ("neg", "zero") else ""))
            ax.text(0.02, yi, txt, transform=ax.get_yaxis_transform(), va="center", fontsize=7)
        if log:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(y, [r["label"] for r in rows], fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle("Hessian conditioning, gates (blue) vs LoRA (orange): MiniLM layer 5, 8 train examples, "
                 "mean pooling, float64; exact counts at tol 1e-6, SLQ estimates at 1e-3", fontsize=10)
    fig.tight_layout()
    path = Path(figures_dir) / "hessian_conditioning.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
