"""Training-step cost of gates vs LoRA vs full finetuning on the real MiniLM.

    python -m analysis.bench_train [--batch 32] [--seq 128] [--steps 10] [--repeats 3]

Time: all methods in this one process, interleaved round by round, so machine noise hits them
alike; the ratios against LoRA are the result. Both wall time and this process's CPU time
are recorded: on a shared machine the CPU-time ratio is the steadier of the two. Memory: what training holds beyond the inference
model, counted exactly in the same process: the tensors autograd saves for backward (deduplicated
by storage), plus gradients and AdamW state of the trainable parameters. (CPU peak RSS cannot be
compared in one process: it is per process and never goes down.)
Writes results/train_cost.json.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import gatecore as gc
from analysis.provenance import ROOT, provenance, write_json

BATCH, SEQ, STEPS, REPEATS, WARMUP = 32, 128, 10, 3, 2
METHODS = ("gates", "lora", "full", "bias")


def build(method: str, seed: int = 0):
    """MiniLM in train mode with the method's trainable set and an AdamW optimizer."""
    torch.manual_seed(seed)
    model, _ = gc.load_model(num_labels=2)
    if method == "gates":
        gc.add_gates(model)  # all six matrices of every layer
        gc.mark_trainable(model, gates=True, bias="gated")
    elif method == "lora":
        gc.add_lora(model, r=8, alpha=16)  # q and v
        gc.mark_trainable(model, lora=True, bias="none")
    elif method == "bias":
        gc.mark_trainable(model, bias="all")
    elif method == "full":
        model.requires_grad_(True)
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, opt


def make_batch(model, batch: int, seq: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, model.config.vocab_size, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, torch.randint(0, 2, (batch,), generator=g)


def step(model, opt, inputs, labels, method):
    loss = torch.nn.functional.cross_entropy(model(**inputs).logits, labels)
    if method == "gates":
        loss = loss + 0.1 * gc.sparsity_penalty(model, "target", target=0.3)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def training_memory(model, opt, inputs, labels, method) -> dict:
    """Bytes autograd saves for one step (each storage once), gradients, optimizer state."""
    seen = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter) and t.requires_grad is not None:
            st = t.untyped_storage()
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(**inputs).logits, labels)
    params = {id(p): p for p in model.parameters()}
    saved = sum(n for ptr, n in seen.items() if ptr not in {p.untyped_storage().data_ptr() for p in params.values()})
    loss.backward()
    grads = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    opt.zero_grad(set_to_none=True)
    state = sum(v.nbytes for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))
    mb = 1 / 2**20
    return {"saved_activations_mb": saved * mb, "grads_mb": grads * mb, "optimizer_state_mb": state * mb,
            "total_mb": (saved + grads + state) * mb}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=BATCH, help="sequences per step (default %(default)s)")
    ap.add_argument("--seq", type=int, default=SEQ, help="tokens per sequence (default %(default)s)")
    ap.add_argument("--steps", type=int, default=STEPS, help="timed steps per method per round (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=REPEATS, help="interleaved rounds (default %(default)s)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: all)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to compare")
    ap.add_argument("--no-memory", action="store_true", help="skip the training-memory count")
    ap.add_argument("--out", default=str(ROOT / "results" / "train_cost.json"), help="results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    setups = {m: build(m) for m in args.methods}
    inputs, labels = make_batch(setups[args.methods[0]][0], args.batch, args.seq)
    for m, (model, opt) in setups.items():
        for _ in range(WARMUP):
            step(model, opt, inputs, labels, m)
    wall, cpu = {m: [] for m in args.methods}, {m: [] for m in args.methods}
    for r in range(args.repeats):
        for m, (model, opt) in setups.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step(model, opt, inputs, labels, m)
            wall[m].append((time.perf_counter() - t) / args.steps)
            cpu[m].append((time.process_time() - c) / args.steps)
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{m} {wall[m][-1] * 1e3:.0f} ms wall / {cpu[m][-1] * 1e3:.0f} ms cpu"
                                                          for m in args.methods))
    ref = "lora" if "lora" in wall else args.methods[0]
    med = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    res = {}
    for m in args.methods:
        res[m] = {"step_ms_median": med(wall[m]), "step_ms_all": [t * 1e3 for t in wall[m]],
                  "cpu_ms_median": med(cpu[m]), "cpu_ms_all": [t * 1e3 for t in cpu[m]],
                  "time_ratio_vs_" + ref: med(wall[m]) / med(wall[ref]),
                  "cpu_time_ratio_vs_" + ref: med(cpu[m]) / med(cpu[ref]),
                  "params": gc.count_parameters(setups[m][0]).as_dict()}
    if not args.no_memory:
        for m, (model, opt) in setups.items():
            res[m]["memory"] = training_memory(model, opt, inputs, labels, m)
        for m in args.methods:
            res[m]["memory_ratio_vs_" + ref] = res[m]["memory"]["total_mb"] / res[ref]["memory"]["total_mb"]
    cfg = {k: v for k, v in vars(args).items() if k != "out"}
    write_json(args.out, {**provenance(cfg, seed=0), "reference": ref, "results": res})
    print(f"\nMiniLM training step, batch {args.batch} x {args.seq} tokens, {args.threads} threads (ratios vs {ref}):")
    for m in args.methods:
        r = res[m]
        mem = f", training memory {r['memory']['total_mb']:.0f} MB ({r['memory_ratio_vs_' + ref]:.2f}x)" if "memory" in r else ""
        print(f"  {m:6s} {r['step_ms_median']:7.0f} ms wall ({r['time_ratio_vs_' + ref]:.2f}x), "
              f"{r['cpu_ms_median']:7.0f} ms cpu ({r['cpu_time_ratio_vs_' + ref]:.2f}x){mem}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
