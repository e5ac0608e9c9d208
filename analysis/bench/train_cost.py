"""Training-step cost of gates vs LoRA (at equal coverage and at their usual settings), biases and full.

    python -m analysis.bench.train_cost [--batches 8 32] [--seqs 64 128] [--steps 3] [--repeats 3] [--device cpu]

Settings (MiniLM, every one with its task head trained):
    gates      gates on all six matrices of every layer + their biases       (the usual gates setting)
    gates_qv   gates on query and value + their biases
    lora       LoRA r = 8, alpha = 16 on query and value                      (the usual LoRA setting)
    lora_all   LoRA r = 8, alpha = 16 on all six matrices
    bias       the biases of the six matrices gates would wrap, as gatecore.setup_method's `bias` method
               (LayerNorm biases stay frozen, unlike mark_trainable(bias="all"))
    full       every parameter
Comparisons, gates setting / LoRA setting: equal coverage gates / lora_all and gates_qv / lora;
usual settings gates / lora. bias and full are reported against lora.

Time: all settings and shapes in this one process, interleaved round by round (round -> shape ->
setting), so machine noise hits them alike; ratios of medians are the result. Wall time and this
process's CPU time are both recorded: on a shared machine the CPU-time ratio is the steadier one.
Memory: what training holds beyond the inference model, counted exactly: the tensors autograd saves
for backward (deduplicated by storage), plus gradients and AdamW state of the trainable parameters.
(CPU peak RSS cannot be compared in one process.) With --device cuda, also the allocator's peak
during one step above what was allocated before it, plus the optimizer state.
Writes results/bench/train_cost.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch

import gatecore
import gatecore.families
from analysis import doc_blocks
from analysis.cli import add_options, from_args, option
from analysis.constants import study_results
from analysis.provenance import provenance, read_record, write_json
from gatecore.train import Objective, train_step

BATCHES, SEQS, STEPS, REPEATS, WARMUP = (8, 32), (64, 128), 3, 3, 2
QV = [r"attention\.self\.(query|value)"]
SETTINGS = {
    "gates": "gates on all six matrices + their biases + head (usual gates setting)",
    "gates_qv": "gates on query, value + their biases + head",
    "lora": "LoRA r=8 alpha=16 on query, value + head (usual LoRA setting)",
    "lora_all": "LoRA r=8 alpha=16 on all six matrices + head",
    "bias": "biases of the six matrices gates wrap + head (LayerNorm biases frozen)",
    "full": "every parameter",
}
# name: (gates setting, LoRA setting, what it compares)
COMPARISONS = {
    "equal_coverage_all_six": ("gates", "lora_all", "same matrices adapted: all six of every layer"),
    "equal_coverage_qv": ("gates_qv", "lora", "same matrices adapted: query and value"),
    "usual": ("gates", "lora", "each method at its usual setting: gates all six, LoRA q, v"),
    "bias_vs_lora": ("bias", "lora", "biases only vs usual LoRA"),
    "full_vs_lora": ("full", "lora", "full finetuning vs usual LoRA"),
}


@dataclass(frozen=True)
class TrainCostConfig:
    batches: tuple = option(BATCHES, "sequences per step")
    seqs: tuple = option(SEQS, "tokens per sequence")
    steps: int = option(STEPS, "timed steps per setting per shape per round")
    repeats: int = option(REPEATS, "interleaved rounds")
    threads: int = option(torch.get_num_threads(), "torch threads; the default: all of this machine's")
    settings: tuple = option(tuple(SETTINGS), "settings to run")
    device: str = option("cpu", "cpu or cuda")
    no_memory: bool = option(False, "skip the training-memory count")
    out: str = option(str(study_results("bench") / "train_cost.json"), "results file")


def build(setting: str, device: str = "cpu", seed: int = 0):
    """MiniLM in train mode with the setting's trainable set, and an AdamW optimizer."""
    torch.manual_seed(seed)
    model, _ = gatecore.load_model(num_labels=2)
    if setting not in ("gates", "gates_qv", "lora", "lora_all", "bias", "full"):
        raise ValueError(f"setting must be one of {list(SETTINGS)}, got {setting!r}")
    everything = gatecore.families.gate_targets(model)  # the six matrices gates cover by default
    gatecore.setup_method(
        model,
        setting.split("_")[0],
        gate_targets=QV if setting == "gates_qv" else None,
        lora_targets=everything if setting == "lora_all" else None,
    )
    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, opt


def make_batch(model, batch: int, seq: int, device: str = "cpu", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, model.config.vocab_size, (batch, seq), generator=g)
    labels = torch.randint(0, 2, (batch,), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}, labels.to(device)


def step(model, opt, inputs, labels, setting):
    objective = Objective(0.1, "target", target=0.3) if setting.startswith("gates") else None
    train_step(
        model, inputs, lambda m, b: torch.nn.functional.cross_entropy(m(**b).logits, labels), opt, objective=objective
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training_memory(model, opt, inputs, labels) -> dict:
    """MB autograd saves for one step (each storage once), gradients, optimizer state."""
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(**inputs).logits, labels)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = sum(n for ptr, n in seen.items() if ptr not in weights)
    loss.backward()
    grads = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    opt.zero_grad(set_to_none=True)
    state = sum(v.nbytes for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))
    mb = 1 / 2**20
    return {
        "saved_activations_mb": saved * mb,
        "grads_mb": grads * mb,
        "optimizer_state_mb": state * mb,
        "total_mb": (saved + grads + state) * mb,
    }


def cuda_peak_mb(model, opt, inputs, labels, setting, device) -> float:
    """Allocator peak during one training step above what was allocated before it, plus optimizer state."""
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step(model, opt, inputs, labels, setting)
    _sync(device)
    state = sum(v.nbytes for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))
    return (torch.cuda.max_memory_allocated(device) - before + state) / 2**20


def ratios(res: dict) -> dict:
    """gates setting / LoRA setting for each comparison whose two settings ran."""
    out = {}
    for name, (a, b, what) in COMPARISONS.items():
        if a in res and b in res:
            r = {
                "gates_setting": a,
                "lora_setting": b,
                "what": what,
                "time": res[a]["step_ms_median"] / res[b]["step_ms_median"],
                "cpu_time": res[a]["cpu_ms_median"] / res[b]["cpu_ms_median"],
            }
            for key in ("memory", "cuda_peak_mb"):
                if key in res[a]:
                    va, vb = (res[x][key]["total_mb"] if key == "memory" else res[x][key] for x in (a, b))
                    r[key] = va / vb
            out[name] = r
    return out


def run(cfg: TrainCostConfig) -> Path:
    """Time (and count the memory of) every setting at every shape; write and return the results file."""
    torch.set_num_threads(cfg.threads)
    dev = cfg.device
    setups = {s: build(s, dev) for s in cfg.settings}
    shapes = [(b, s) for b in cfg.batches for s in cfg.seqs]
    model0 = setups[cfg.settings[0]][0]
    batches = {sh: make_batch(model0, *sh, device=dev) for sh in shapes}
    for sh in shapes:
        for s, (model, opt) in setups.items():
            for _ in range(WARMUP):
                step(model, opt, *batches[sh], s)
    wall = {(sh, s): [] for sh in shapes for s in setups}
    cpu = {(sh, s): [] for sh in shapes for s in setups}
    for r in range(cfg.repeats):
        for sh in shapes:
            for s, (model, opt) in setups.items():
                _sync(dev)
                t, c = time.perf_counter(), time.process_time()
                for _ in range(cfg.steps):
                    step(model, opt, *batches[sh], s)
                _sync(dev)
                wall[sh, s].append((time.perf_counter() - t) / cfg.steps * 1e3)
                cpu[sh, s].append((time.process_time() - c) / cfg.steps * 1e3)
        print(f"round {r + 1}/{cfg.repeats} done", flush=True)
    runs = {}
    for sh in shapes:
        res = {}
        for s, (model, opt) in setups.items():
            res[s] = {
                "step_ms_median": statistics.median(wall[sh, s]),
                "step_ms_all": wall[sh, s],
                "cpu_ms_median": statistics.median(cpu[sh, s]),
                "cpu_ms_all": cpu[sh, s],
                "params": gatecore.count_parameters(model).as_dict(),
            }
            if not cfg.no_memory:
                res[s]["memory"] = training_memory(model, opt, *batches[sh])
            if dev.startswith("cuda"):
                res[s]["cuda_peak_mb"] = cuda_peak_mb(model, opt, *batches[sh], s, dev)
        runs[f"{sh[0]}x{sh[1]}"] = {"batch": sh[0], "seq": sh[1], "results": res, "ratios": ratios(res)}
    config = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "out"}
    path = write_json(
        cfg.out,
        {
            **provenance(config, seed=0, device=dev),
            "settings": SETTINGS,
            "comparisons": {
                k: {"gates_setting": a, "lora_setting": b, "what": w} for k, (a, b, w) in COMPARISONS.items()
            },
            "runs": runs,
        },
    )
    print_table(runs, cfg.threads, dev)
    print(f"wrote {cfg.out}")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap, TrainCostConfig, choices={"settings": list(SETTINGS)}, items={"batches": int, "seqs": int})
    run(from_args(TrainCostConfig, ap.parse_args(argv)))
    return 0


def doc_block(results_dir) -> str | None:
    """docs/results.md's tables of <results_dir>/bench/train_cost.json (None without it): per shape, each comparison's
    ratios (wall, CPU time, training memory), then each setting's step time and memory."""
    path = study_results("bench", results_dir) / "train_cost.json"
    rec = read_record(path)
    if rec is None:
        return None
    runs = list(rec["runs"].values())
    comparisons = rec["comparisons"]
    head = ["batch x tokens"] + [
        f"{c['gates_setting']} / {c['lora_setting']}: wall, CPU, memory" for c in comparisons.values()
    ]
    rows = [
        [f"{r['batch']} x {r['seq']}"]
        + [
            ", ".join(f"{r['ratios'][c][k]:.2f}x" for k in ("time", "cpu_time", "memory") if k in r["ratios"][c])
            for c in comparisons
        ]
        for r in runs
    ]
    ratios_table = doc_blocks.table(head, rows)

    def cell(res: dict) -> str:
        memory = f", {res['memory']['total_mb']:.0f} MB" if "memory" in res else ""
        return f"{res['step_ms_median']:.0f} / {res['cpu_ms_median']:.0f}{memory}"

    head = ["setting", "trainable"] + [f"{r['batch']} x {r['seq']}: wall / CPU ms, memory" for r in runs]
    rows = [
        [s, f"{runs[0]['results'][s]['params']['trainable']:,}"] + [cell(r["results"][s]) for r in runs]
        for s in runs[0]["results"]
    ]
    legend = "; ".join(f"{s}: {what}" for s, what in rec["settings"].items())
    cfg = rec["config"]
    note = f"Medians of {cfg['repeats']} interleaved rounds of {cfg['steps']} steps, {rec['threads']} thread(s), {rec['device']}."
    return (
        f"{ratios_table}\n\n{doc_blocks.table(head, rows)}\n\nSettings: {legend}. {note} "
        f"{doc_blocks.source(path, rec, __name__)}"
    )


def print_table(runs: dict, threads: int, device: str) -> None:
    print(
        f"\nMiniLM training step on {device}, {threads} threads; ratios = gates setting / LoRA setting "
        "(wall time, CPU time, training memory)"
    )
    for key, run in runs.items():
        print(f"\nbatch {run['batch']} x {run['seq']} tokens")
        for s, r in run["results"].items():
            mem = f"{r['memory']['total_mb']:8.0f} MB" if "memory" in r else ""
            peak = f", cuda peak {r['cuda_peak_mb']:.0f} MB" if "cuda_peak_mb" in r else ""
            print(f"  {s:9s} {r['step_ms_median']:7.0f} ms wall {r['cpu_ms_median']:7.0f} ms cpu {mem}{peak}")
        for name, q in run["ratios"].items():
            mem = f"  memory {q['memory']:.2f}x" if "memory" in q else ""
            peak = f"  cuda peak {q['cuda_peak_mb']:.2f}x" if "cuda_peak_mb" in q else ""
            print(
                f"  {name:24s} {q['gates_setting']:>8s} / {q['lora_setting']:<8s} wall {q['time']:.2f}x  "
                f"cpu {q['cpu_time']:.2f}x{mem}{peak}"
            )


if __name__ == "__main__":
    raise SystemExit(main())
