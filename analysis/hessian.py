"""Hessian spectrum of the gate or LoRA parameters of a model on a fixed set of task examples.

    python -m analysis.hessian --task SST-2 --method gates --spectrum exact --targets 'layer\\.5\\.attention\\.self\\.value'
    python -m analysis.hessian --task CoLA --method lora --lora-r 8 --spectrum lanczos --train-steps 150

Loss: mean cross-entropy (MSE for STS-B) of the classifier on the pooled encoder output, `--pooling mean`
(what all-MiniLM-L6-v2 was trained with) or `cls` (BertForSequenceClassification's [CLS] pooler), over
`--examples` training examples, with gates in eval mode (`--noise-draws 0`) or averaged over fixed draws.
Only the analysed adapter parameters vary; the task head, biases and frozen weights are fixed at their
(initial or trained) values. See docs/design.md §4 and gatecore.hessian for the reported numbers.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from gatecore import Gate, add_gates, add_lora, load_model, load_trainable, mark_trainable, save_trainable, sparsity_penalty
from gatecore.checkpoint import adapter_layout
from gatecore.hessian import (MAX_EXACT_N, METHODS, SLQ_PROBES, SLQ_STEPS, TOL, HessianOperator, deflated, lanczos,
                              products_to_accuracy, saturated_mask)
from gatecore.parameters import head_parameters, ids
from gatecore.pooling import POOLINGS, pooled_loss

from .data import ALIASES, GLUE, glue_dir, read_glue
from .provenance import ROOT, provenance, write_json

# ---- defaults -------------------------------------------------------------------------------------------
MODEL = "all-MiniLM-L6-v2"
TARGETS = [r"attention\.self\.(query|value)"]   # the common LoRA layers; gates go on the same ones
EXAMPLES, MAX_LENGTH, NOISE_DRAWS = 16, 32, 4
TRAIN_EXAMPLES, TRAIN_BATCH, LR_ADAPTER, LR_HEAD = 512, 16, 1e-2, 1e-3
SPARSITY_LAM, SPARSITY_TARGET = 0.5, 0.3            # gates only: lam * |mean P(open) - keep| ('target')
TRAINING = dict(optimizer="AdamW", lr_adapter=LR_ADAPTER, lr_head=LR_HEAD, batch=TRAIN_BATCH, examples=TRAIN_EXAMPLES,
                trainable="adapter + task head (no biases)", gate_sigma=0.1, gate_reg_sigma=0.5,
                gate_penalty=f"{SPARSITY_LAM} * target(sparsity {SPARSITY_TARGET})", pooling="as --pooling")
OUT_DIR = ROOT / "results" / "hessian"
TASKS = [GLUE[k][0] for k in GLUE]   # GLUE folder names: SST-2, CoLA, MRPC, RTE, STS-B, QNLI
SYNTHETIC_WORDS = "good bad fine awful great poor film plot actor story slow long".split()


def read_task(task: str, n: int, seed: int, skip: int = 0) -> tuple[list[tuple[str, ...]], list, int]:
    """(texts, labels, num_labels): n examples drawn with `seed` from the train split (QNLI: dev, the only split here),
    after leaving out the first `skip` of that draw. 'synthetic': label = 'good'/'great'/'fine' occurs."""
    rng = np.random.default_rng(seed)
    if task == "synthetic":
        texts = [(" ".join(rng.choice(SYNTHETIC_WORDS, 6)),) for _ in range(skip + n)][skip:]
        return texts, [int(any(w in t[0].split() for w in ("good", "great", "fine"))) for t in texts], 2
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected 'synthetic' or a GLUE task in {glue_dir()}: {sorted(TASKS)}")
    key = ALIASES.get(task.lower(), task.lower())
    rows = read_glue(key, "dev" if task == "QNLI" else "train")  # QNLI: dev, the only split here
    idx = rng.permutation(len(rows))[skip: skip + n]
    sub = rows.subset(idx)
    return sub.texts, sub.labels, 1 if GLUE[key][-1] is None else len(GLUE[key][-1])


def encode(tok, texts, labels, batch_size: int, max_length: int = MAX_LENGTH) -> list[dict]:
    out = []
    for i in range(0, len(texts), batch_size):
        chunk = list(zip(*texts[i: i + batch_size]))
        b = dict(tok(*chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        lab = labels[i: i + batch_size]
        b["labels"] = torch.tensor(lab, dtype=torch.float32 if isinstance(lab[0], float) else torch.long)
        out.append(b)
    return out


def build(model_name, num_labels, method, targets, lora_r, seed):
    """Pretrained model (eager attention) with gates or LoRA on `targets`; adapters + head trainable."""
    torch.manual_seed(seed)
    model, tok = load_model(model_name, num_labels=num_labels, attn_implementation="eager")
    if method == "gates":
        add_gates(model, targets=targets)
    elif method == "lora":
        add_lora(model, targets=targets, r=lora_r)
    else:
        raise ValueError(f"method must be 'gates' or 'lora', got {method!r}")
    mark_trainable(model, bias="none", head=True)
    return model.eval(), tok


def train_short(model, loss_fn, batches, steps: int, lr_adapter=LR_ADAPTER, lr_head=LR_HEAD, progress=True):
    """AdamW on adapters (+ head), the gates with their sparsity penalty; train mode only on the gates."""
    from tqdm.auto import tqdm
    head = ids(head_parameters(model))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if id(p) not in head], "lr": lr_adapter},
                             {"params": [p for p in params if id(p) in head], "lr": lr_head}], weight_decay=0.0)
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    for g in gates:
        g.train()   # fresh gate noise while training; dropout stays off
    losses = []
    for step in tqdm(range(steps), desc="short training", disable=not progress, leave=False):
        loss = loss_fn(model, batches[step % len(batches)])
        if gates:
            loss = loss + SPARSITY_LAM * sparsity_penalty(model, "target", SPARSITY_TARGET)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def analyze(args, progress=True) -> dict:
    """Build (or load) the model, optionally train it, run the spectra; returns the results record."""
    torch.manual_seed(args.seed)
    texts, labels, num_labels = read_task(args.task, args.examples, args.seed)
    model, tok = build(args.model, num_labels, args.method, args.targets, args.lora_r, args.seed)
    loss_fn, state, losses = pooled_loss(args.pooling), "init", None
    if args.train_steps and not args.checkpoint:
        tt, tl, _ = read_task(args.task, TRAIN_EXAMPLES, args.seed, skip=args.examples)   # disjoint from the analysed ones
        losses = train_short(model, loss_fn, encode(tok, tt, tl, TRAIN_BATCH, args.max_length), args.train_steps, progress=progress)
        args.checkpoint = save_trainable(model, args.save_checkpoint or OUT_DIR.parent.parent / "runs" / "hessian" /
                                         f"{args.task}_{args.method}_seed{args.seed}.pt", train_steps=args.train_steps)
    if args.checkpoint:   # always through the file: a fresh model, re-wrapped as recorded
        model, _ = load_model(args.model, num_labels=num_labels, attn_implementation="eager")
        meta = load_trainable(model, args.checkpoint)
        kind = "gates" if args.method == "gates" else "lora"
        if not adapter_layout(model)[kind]:
            raise ValueError(f"checkpoint {args.checkpoint} has no {kind} layers, but --method {args.method}")
        state = f"trained ({meta.get('train_steps', '?')} steps)" if meta else "checkpoint"
        model.eval()
    dtype = {"float64": torch.float64, "float32": torch.float32}[args.dtype]
    batches = encode(tok, texts, labels, args.batch_size or args.examples, args.max_length)
    op = HessianOperator(model, batches, "gates" if args.method == "gates" else "lora", loss_fn,
                         noise_draws=args.noise_draws if args.method == "gates" else 0, seed=args.seed, dtype=dtype)
    methods = list(METHODS) if "all" in args.spectrum else list(dict.fromkeys(args.spectrum))
    if "exact" in methods and op.n > args.max_exact_n:
        raise ValueError(f"n={op.n} {args.method} parameters is too large for --spectrum exact (max {args.max_exact_n}); "
                         "use lanczos/slq, fewer --targets, or raise --max-exact-n")
    kw = {"exact": dict(max_n=args.max_exact_n, progress=progress), "lanczos": dict(seed=args.seed, progress=progress),
          "slq": dict(steps=args.slq_steps, probes=args.slq_probes, seed=args.seed, progress=progress),
          "pyhessian": dict(seed=args.seed, density_steps=args.slq_steps)}
    mask = saturated_mask(op)
    deflate = mask is not None and 0 < int(mask.sum()) <= op.n - 3   # eigsh needs n >= 3
    reports = [deflated(m, op, mask, tol=args.tol, **kw[m]) if deflate and m in ("lanczos", "slq")
               else METHODS[m](op, tol=args.tol, **kw[m]) for m in methods]
    record = {"setting": dict(task=args.task, method=args.method, targets=args.targets, lora_r=args.lora_r if args.method == "lora" else None,
                              n=op.n, examples=args.examples, max_length=args.max_length, pooling=args.pooling,
                              noise_draws=op.noise_draws, dtype=args.dtype, state=state, checkpoint=str(args.checkpoint or ""),
                              loss=f"{'MSE' if num_labels == 1 else 'cross-entropy'} on {len(texts)} train examples, no sparsity penalty",
                              tokens=int(sum(b["attention_mask"].sum() for b in batches)), n_saturated_gates=None if mask is None else int(mask.sum()),
                              train_loss_first_last=[losses[0], losses[-1]] if losses else None,
                              training=TRAINING | {"steps": args.train_steps} if args.train_steps else None),
              "reports": [r.as_dict() for r in reports]}
    if args.compare_power:
        ref = next((r for r in reports if r.method in ("exact", "lanczos")), None) or lanczos(op, tol=args.tol, eig_tol=1e-10, progress=False)
        top = ref.lambda_max if abs(ref.lambda_max) >= abs(ref.lambda_min) else ref.lambda_min
        record["power_vs_lanczos"] = {"reference_method": ref.method, **products_to_accuracy(op, top, seed=args.seed)}
    record["eigenvalues"] = {r.method: (r.eigenvalues.tolist() if r.eigenvalues is not None else None) for r in reports}
    record["densities"] = {r.method: r.density for r in reports if r.density is not None}
    op.release()
    return record


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MODEL, help=f"model name or local folder (default: the offline {MODEL})")
    ap.add_argument("--task", default="SST-2", help=f"GLUE task under $GLUE_DIR ({', '.join(TASKS)}) or 'synthetic' (smoke runs)")
    ap.add_argument("--method", choices=["gates", "lora"], default="gates", help="which adapter's parameters to analyse")
    ap.add_argument("--targets", nargs="+", default=TARGETS, help="layer name patterns (gatecore.find_targets) for the adapter")
    ap.add_argument("--lora-r", type=int, default=1, help="LoRA rank (1 matches rows+cols gates on the same layers; 8 is the common setting)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="trained gate/LoRA state (gatecore.save_trainable); init otherwise")
    ap.add_argument("--train-steps", type=int, default=0, help="without --checkpoint: train this many steps first (AdamW, lr "
                    f"{LR_ADAPTER} adapter / {LR_HEAD} head, batch {TRAIN_BATCH}, gates with {SPARSITY_LAM} * 'target' penalty "
                    f"at sparsity {SPARSITY_TARGET}), save, reload")
    ap.add_argument("--save-checkpoint", type=Path, default=None, help="where --train-steps saves (default runs/hessian/...)")
    ap.add_argument("--examples", type=int, default=EXAMPLES, help="examples in the fixed loss (drawn from train with --seed)")
    ap.add_argument("--batch-size", type=int, default=0, help="examples per batch inside the loss (0: one batch)")
    ap.add_argument("--max-length", type=int, default=MAX_LENGTH, help="tokens per example (truncation)")
    ap.add_argument("--pooling", choices=list(POOLINGS), default="mean", help="sentence representation fed to the classifier")
    ap.add_argument("--noise-draws", type=int, default=NOISE_DRAWS, help="gates: fixed noise draws averaged in the loss (0: eval gates)")
    ap.add_argument("--spectrum", choices=[*METHODS, "all"], nargs="+", default=["lanczos"],
                    help="spectrum method(s), several allowed (all: exact, lanczos, slq, pyhessian)")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="precision of the Hessian products")
    ap.add_argument("--tol", type=float, default=TOL, help="zero / active-subspace threshold relative to max |eigenvalue|")
    ap.add_argument("--max-exact-n", type=int, default=MAX_EXACT_N, help="largest n for the dense exact Hessian")
    ap.add_argument("--slq-steps", type=int, default=SLQ_STEPS, help="Lanczos steps per SLQ probe")
    ap.add_argument("--slq-probes", type=int, default=SLQ_PROBES, help="SLQ probe vectors")
    ap.add_argument("--compare-power", action="store_true", help="also count products: pyhessian power iteration vs Lanczos")
    ap.add_argument("--seed", type=int, default=0, help="seed for examples, init, noise draws and probes")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default results/hessian/<task>_<method>_<state>_seed<k>.json)")
    return ap


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        record = analyze(args)
    except (ValueError, FileNotFoundError) as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    state = "init" if record["setting"]["state"] == "init" else "trained"
    out = args.out or OUT_DIR / f"{args.task}_{args.method}_{state}_seed{args.seed}.json"
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    head = provenance(config, args.seed, "cpu")
    if argv is not None:   # called in-process (e.g. by the sweep): record the equivalent command line
        head["command"] = shlex.join(["python", "-m", "analysis.hessian", *map(str, argv)])
    write_json(out, {**head, **record})
    for r in record["reports"]:
        print(f"{r['method']:>9}: n={r['n']} products={r['products']} wall={r['wall_s']:.1f}s lambda_max={r['lambda_max']} "
              f"lambda_min={r['lambda_min']} negative={r['n_negative']} zero={r['n_zero']} kappa_eff={r['kappa_eff']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
