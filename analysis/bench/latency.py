"""Latency of the dense vs compressed model (and the gated one, gates still in place), same process.

    python -m analysis.bench                                  # synthetic patterns at 30% and 40% removed
    python -m analysis.bench --checkpoint run.pt              # a trained gated checkpoint (gatecore.save_trainable)
    python -m analysis.bench --sparsity 0.2 0.5 --repeats 5   # other patterns, fewer repeats

Each setting: warm-up forwards, then `repeats` rounds that time dense, gated and compressed in turn
(interleaved, so a drift of the shared machine hits all three alike); median and quartiles per model.
CPU at batch 1 and 32, GPU at batch 1 and 128 when one is present, sequence length 128, random
token ids with a full attention mask. Writes results/bench/latency_<device>_<source>.json and prints the
speedup ratios next to the FLOP ratio (the ceiling).

From Python: `run(BenchConfig(sparsity=(0.3,), repeats=5))`; argv is parsed in `main` only. docs/design.md §3, §5.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

import gatecore
from analysis.cli import add_options, from_args, option
from analysis.constants import study_results
from analysis.plotting import save_figure
from analysis.provenance import provenance, small_mode, warn_if_dirty, write_json

SPARSITIES = [0.3, 0.4]  # fraction of the encoder's gated linear weights removed by the synthetic pattern
CPU_BATCHES = [1, 32]
GPU_BATCHES = [1, 128]
SEQ = 128
REPEATS = 10
WARMUP = 2
THREADS = 2  # the shared CI/dev machine has 2 cores
SEED = 0


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark; see the CLI help for each field. Recorded as a dict (paths as strings)."""

    model: str | None = option(None, "model name or local folder; None: the offline all-MiniLM-L6-v2")
    checkpoint: Path | None = option(None, "gated checkpoint from gatecore.save_trainable (overrides --sparsity)")
    num_labels: int = option(2, "classes of the checkpoint's task head (1 = regression)")
    sparsity: tuple = option(tuple(SPARSITIES), "synthetic removed fractions")
    unstructured: bool = option(False, "close gates independently instead of whole structures")
    batch: tuple | None = option(None, f"batch sizes; None: CPU {CPU_BATCHES}, GPU {GPU_BATCHES}")
    seq: int = option(SEQ, "sequence length")
    repeats: int = option(REPEATS, "timed forwards per model")
    warmup: int = option(WARMUP, "untimed forwards first")
    threads: int = option(THREADS, "torch CPU threads")
    device: str = option("auto", "auto: CPU, plus the GPU when one is present")
    no_gated: bool = option(False, "skip timing the model with gates still in place")
    profile: bool = option(False, "also record where a CPU forward spends its time (torch.profiler)")
    seed: int = option(SEED, "seed of the synthetic pattern")
    out: Path = option(study_results("bench"), "output folder")


@dataclass
class Timing:
    """Milliseconds per forward over `n` repeats."""

    median_ms: float
    q25_ms: float
    q75_ms: float
    min_ms: float
    max_ms: float
    n: int

    @classmethod
    def of(cls, seconds: list[float]) -> "Timing":
        ms = sorted(1e3 * s for s in seconds)
        q = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else [ms[0]] * 3
        return cls(statistics.median(ms), q[0], q[2], ms[0], ms[-1], len(ms))


def random_inputs(model, batch: int, seq: int, device, seed: int = SEED) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (batch, seq), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def time_models(
    models: dict,
    batch: int = 32,
    seq: int = SEQ,
    repeats: int = REPEATS,
    warmup: int = WARMUP,
    device="cpu",
    progress: bool = False,
) -> dict[str, Timing]:
    """Interleaved timing of several eval-mode models on the same random batch; {name: Timing}."""
    inputs = random_inputs(next(iter(models.values())), batch, seq, device)
    for m in models.values():
        m.eval().to(device)
        for _ in range(warmup):
            m(**inputs)
    times = {name: [] for name in models}
    for _ in tqdm(range(repeats), desc=f"{device} batch {batch}", disable=not progress, leave=False):
        for name, m in models.items():
            _sync(device)
            t = time.perf_counter()
            m(**inputs)
            _sync(device)
            times[name].append(time.perf_counter() - t)
    return {name: Timing.of(ts) for name, ts in times.items()}


def measure_speedup(dense, compressed, batch: int = 32, seq: int = SEQ, repeats: int = REPEATS, device="cpu") -> dict:
    """Median latency of both models (same process, interleaved, after warm-up) and dense/compressed.

    Returns {"dense_ms", "compressed_ms", "speedup", "batch", "seq", "repeats", "device", "threads"}.
    """
    t = time_models({"dense": dense, "compressed": compressed}, batch, seq, repeats, WARMUP, device)
    return {
        "dense_ms": t["dense"].median_ms,
        "compressed_ms": t["compressed"].median_ms,
        "speedup": t["dense"].median_ms / t["compressed"].median_ms,
        "batch": batch,
        "seq": seq,
        "repeats": repeats,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


@torch.inference_mode()
def profile_ops(model, inputs, top: int = 8, forwards: int = 3) -> dict[str, float]:
    """Self time (ms per forward, mean of `forwards`) of the `top` most expensive ops (torch.profiler), plus the total."""
    from torch.profiler import ProfilerActivity, profile

    model(**inputs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(forwards):
            model(**inputs)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    out = {e.key: e.self_cpu_time_total / 1e3 / forwards for e in ops[:top]}
    return {**out, "total": sum(e.self_cpu_time_total for e in ops) / 1e3 / forwards}


@torch.no_grad()
def max_rel_diff(a, b, inputs) -> float:
    ya, yb = a(**inputs).logits, b(**inputs).logits
    return ((ya - yb).abs().max() / yb.abs().max()).item()


def build(model_name, checkpoint, sparsity, structured, seed, num_labels=2):
    """(dense, gated, compressed) float32 eval models, from a checkpoint or a synthetic pattern."""
    dense = gatecore.load_model(model_name, num_labels=num_labels)[0].eval()
    gated = copy.deepcopy(dense)
    if checkpoint is not None:
        gatecore.load_trainable(gated, checkpoint)
    else:
        gatecore.add_gates(gated)
        gatecore.random_gate_pattern(gated, sparsity, seed=seed, structured=structured)
    gated.eval()
    return dense, gated, gatecore.compress(copy.deepcopy(gated)).eval()


def bench_one(cfg: BenchConfig, sparsity, devices) -> dict:
    dense, gated, small = build(cfg.model, cfg.checkpoint, sparsity, not cfg.unstructured, cfg.seed, cfg.num_labels)
    size = gatecore.size_report(dense, small, seq=cfg.seq)
    run = {
        "sparsity": sparsity,
        "gate_removed_fraction": gatecore.gate_report(gated).removed_fraction,
        "size": size.as_dict(),
        "max_rel_diff_compressed_vs_gated": max_rel_diff(small, gated, random_inputs(dense, 2, 32, "cpu")),
        "timings": [],
    }
    print(f"\n== {cfg.checkpoint or f'synthetic pattern, sparsity {sparsity}'}\n{size}")
    for device, batches in devices:
        for batch in batches:
            models = (
                {"dense": dense, "gated": gated, "compressed": small}
                if not cfg.no_gated
                else {"dense": dense, "compressed": small}
            )
            t = time_models(models, batch, cfg.seq, cfg.repeats, cfg.warmup, device, progress=True)
            row = {
                "device": device,
                "batch": batch,
                "seq": cfg.seq,
                **{k: asdict(v) for k, v in t.items()},
                "speedup_compressed": t["dense"].median_ms / t["compressed"].median_ms,
                "speedup_compressed_min": t["dense"].min_ms / t["compressed"].min_ms,
            }  # least disturbed runs
            if "gated" in t:
                row["speedup_gated"] = t["dense"].median_ms / t["gated"].median_ms
            if cfg.profile and device == "cpu":
                inputs = random_inputs(dense, batch, cfg.seq, device)
                row["profile_ms"] = {name: profile_ops(m, inputs) for name, m in models.items()}
                for name, ops in row["profile_ms"].items():
                    print(f"  {name:>10}: " + ", ".join(f"{k} {v:.0f}" for k, v in ops.items()))
            run["timings"].append(row)
            print(
                f"{device:>4} batch {batch:>3}: dense {t['dense'].median_ms:8.1f} ms, compressed {t['compressed'].median_ms:8.1f} ms"
                f" -> {row['speedup_compressed']:.2f}x (FLOP ceiling {size.flop_speedup_ceiling:.2f}x)"
                + (
                    f"; gated in place {t['gated'].median_ms:8.1f} ms ({row['speedup_gated']:.2f}x)"
                    if "gated" in t
                    else ""
                )
            )
    for m in (dense, gated, small):
        m.to("cpu")
    return run


def make_figures(results_dir, figures_dir) -> list[Path]:
    """Speedup vs removed fraction from results/bench/latency_*.json, with the FLOP-ratio ceiling."""
    import json

    import matplotlib.pyplot as plt

    files = sorted(study_results("bench", results_dir).glob("latency_*.json"))
    if not files:
        return []
    series, ceiling, threads = {}, [], set()
    for f in files:
        d = json.loads(f.read_text())
        if "runs" not in d or d["config"].get("profile"):
            continue  # another benchmark's file (runtimes_*), or a profiling rerun of a setting already drawn
        warn_if_dirty(f, d)
        threads.add(d.get("threads"))
        kind = "unstructured" if d["config"].get("unstructured") else "structured"
        for run in d["runs"]:
            x = run["size"]["encoder_linear_removed"]
            ceiling.append((x, run["size"]["flop_speedup_ceiling"]))
            for t in run["timings"]:
                lo = t["dense"]["q25_ms"] / t["compressed"]["q75_ms"]
                hi = t["dense"]["q75_ms"] / t["compressed"]["q25_ms"]
                key = f"{t['device']} batch {t['batch']} ({kind})"
                series.setdefault(key, []).append((x, t["speedup_compressed"], lo, hi, t.get("speedup_gated")))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    cx, cy = zip(*sorted(set(ceiling) | {(0.0, 1.0)}))  # no removal: no speedup
    ax.plot(cx, cy, "k--", marker="_", label="FLOP ratio (ceiling)")
    colors = {
        k: f"C{i}" for i, k in enumerate(sorted({k.split(" (")[0] for k in series}))
    }  # one colour per device/batch
    for key, pts in sorted(series.items()):
        pts.sort()
        xs, ys, lo, hi, gated = zip(*pts)
        err = [[y - l for y, l in zip(ys, lo)], [h - y for y, h in zip(ys, hi)]]
        color, marker = colors[key.split(" (")[0]], "s" if "unstructured" in key else "o"
        ax.errorbar(
            xs,
            ys,
            yerr=err,
            marker=marker,
            capsize=3,
            color=color,
            mfc="none" if marker == "s" else color,
            label=f"compressed, {key}",
        )
        if all(g is not None for g in gated):
            ax.plot(xs, gated, marker="x", ls=":", color=color, alpha=0.6, label=f"gates in place, {key}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlim(0, max(cx) + 0.05)
    ax.set_xlabel("fraction of encoder linear weights removed")
    ax.set_ylabel("speedup over dense (median latency ratio)")
    ax.set_title(
        f"MiniLM inference speedup after compression\n(seq 128, {', '.join(str(t) for t in sorted(threads))} CPU threads; "
        "bars: quartiles)",
        fontsize=10,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return [save_figure(fig, Path(figures_dir) / "bench_speedup.png")]


def run(cfg: BenchConfig) -> Path:
    """Time every setting on the CPU (and the GPU when present and asked); write and return the results file.
    Small mode (GATECORE_SMALL=1): 2 repeats, 1 warm-up, the first sparsity only."""
    if small_mode():
        cfg = replace(cfg, repeats=min(cfg.repeats, 2), warmup=1, sparsity=cfg.sparsity[:1])
    torch.set_num_threads(cfg.threads)
    has_gpu = torch.cuda.is_available()
    if cfg.device == "cuda" and not has_gpu:
        raise RuntimeError("device cuda asked for, but torch sees no GPU")
    devices = [] if cfg.device == "cuda" else [("cpu", list(cfg.batch or CPU_BATCHES))]
    if has_gpu and cfg.device != "cpu":
        devices.append(("cuda", list(cfg.batch or GPU_BATCHES)))
    gpu_note = torch.cuda.get_device_name(0) if has_gpu else "no GPU available in this run"
    print(f"threads {torch.get_num_threads()}; GPU: {gpu_note}")
    settings = [None] if cfg.checkpoint else cfg.sparsity
    runs = [bench_one(cfg, s, devices) for s in settings]
    source = Path(cfg.checkpoint).stem if cfg.checkpoint else "s" + "-".join(f"{round(100 * s)}" for s in cfg.sparsity)
    config = {f.name: _recorded(getattr(cfg, f.name)) for f in fields(cfg)}
    out = {
        **provenance(config, cfg.seed, "cuda" if has_gpu and cfg.device != "cpu" else "cpu"),
        "gpu": gpu_note,
        "runs": runs,
    }
    tag = (
        "_".join(d for d, _ in devices)
        + ("_unstructured" if cfg.unstructured else "")
        + ("_profile" if cfg.profile else "")
    )
    path = write_json(Path(cfg.out) / f"latency_{tag}_{source}.json", out)
    print(f"wrote {path}")
    return path


def _recorded(value):
    """As the results file records a config value: paths as strings, tuples as lists."""
    return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(ap, BenchConfig, choices={"device": ["auto", "cpu", "cuda"]}, items={"sparsity": float, "batch": int})
    cfg = from_args(BenchConfig, ap.parse_args(argv))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda asked for, but torch sees no GPU")
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
