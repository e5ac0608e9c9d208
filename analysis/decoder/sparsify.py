"""Task-agnostic sparsification (the paper's post-training setting): gates on all seven projections of every
layer, trained on the language-modelling loss of an offline corpus, against two pruning baselines without
training that close the same number of rows and columns (analysis/decoder/prune.py). Perplexity on held-out text.

    python -m analysis.decoder.sparsify                         # 10/20/30/40% removed, resumable (a rerun continues)
    python -m analysis.decoder.sparsify --model tiny-llama --steps 4 --heldout-chunks 4 --out /tmp/s.jsonl   # smoke

Stages, one per removed fraction in increasing order, each continuing from the previous stage's gates (gradual
sparsification): AdamW on the gate parameters only, warm-up + linear decay, loss = LM loss + lam * ramp * params
penalty, the PI controller steering the measured removed fraction to the request and the exact final correction
(gatecore.sparsity_control); then, on the held-out chunks: the trained gates, the trained selection with every open
gate set to 1 (no trained scales), and both baselines at the same per-matrix counts; the compressed trained model's
size and its decode speedup (batch 1, prompt 128, 64 new tokens, interleaved with the dense model).
Each stage appends one record to results/decoder/sparsify.jsonl and saves its gates (checkpoints/decoder/).
The weights are Q4_1-dequantized (analysis/decoder/models.py). docs/decoder.md.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch

import gatecore
from analysis.cli import add_options, from_args, option
from analysis.constants import ROOT, study_results
from analysis.decoder.corpus import corpus_texts, token_chunks
from analysis.decoder.generation import sizes, time_generation
from analysis.decoder.models import QUANT_NOTE, TINY, load
from analysis.decoder.perplexity import perplexity
from analysis.decoder.prune import activation_rms, closed_counts, open_gates_to_one, prune_like
from analysis.provenance import append_jsonl, provenance, read_jsonl
from gatecore.methods import warmup_linear_schedule
from gatecore.sparsity_control import SparsityController, correct_removed, removed_got
from gatecore.train import Objective, train_loop

OUT = study_results("decoder") / "sparsify.jsonl"
CHECKPOINTS = ROOT / "checkpoints" / "decoder"


@dataclass(frozen=True)
class SparsifyConfig:
    model: str | None = option(
        None, "model name or folder; None: the offline SmolLM2-135M-Instruct; tiny-llama: smoke run"
    )
    removed: tuple = option((0.1, 0.2, 0.3, 0.4), "removed fractions asked, one stage each, increasing")
    steps: int = option(100, "optimizer steps per stage")
    batch: int = option(4, "chunks per training batch")
    seq: int = option(128, "tokens per chunk (training and evaluation)")
    gate_lr: float = option(0.2, "AdamW lr of the gate parameters (the finetuning studies' default)")
    lam: float = option(1.0, "weight of the sparsity penalty")
    lam_warmup: float = option(0.2, "fraction of each stage over which lam ramps up from 0")
    objective: str = option("params", "sparsity objective (gatecore.sparsity_penalty)")
    sigma: float = option(0.1, "gate noise")
    reg_sigma: float = option(0.5, "scale inside the penalty's Phi")
    heldout_chunks: int = option(64, "held-out chunks for perplexity")
    calib_chunks: int = option(32, "training chunks for the activation-weighted baseline's statistics")
    eval_batch: int = option(8, "chunks per evaluation batch")
    speed_repeats: int = option(3, "interleaved decode timings per stage (0: none)")
    seed: int = option(0, "seed of the gate init, noise and batch order")
    threads: int = option(1, "torch CPU threads")
    out: str = option(str(OUT), "results file (JSONL, one record per stage plus the dense one)")
    checkpoints: str = option(str(CHECKPOINTS), "folder of the stage checkpoints (gatecore.save_trainable)")


def _config_dict(cfg) -> dict:
    return {f.name: list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v for f in fields(cfg)}


def _same_setup(rec: dict, cfg: SparsifyConfig) -> bool:
    """Records of another setup (other steps, lr, ...) are never resumed from."""
    keys = (
        "model",
        "steps",
        "batch",
        "seq",
        "gate_lr",
        "lam",
        "objective",
        "sigma",
        "reg_sigma",
        "seed",
        "heldout_chunks",
    )
    return all(rec["config"].get(k) == getattr(cfg, k) for k in keys)


def train_stage(model, chunks: torch.Tensor, asked: float, cfg: SparsifyConfig, gen: torch.Generator) -> dict:
    """One stage: the gates move toward `asked` removed; returns the loss curve and the controller's trace."""
    params = gatecore.gate_parameters(model)
    opt = torch.optim.AdamW(params, lr=cfg.gate_lr, weight_decay=0.0)
    sched = warmup_linear_schedule(opt, cfg.steps)
    ctrl = SparsityController(cfg.objective, asked, start=cfg.lam_warmup)
    objective = Objective(cfg.lam, cfg.objective, lam_warmup=cfg.lam_warmup, reg_sigma=cfg.reg_sigma)
    curve, t0 = [], time.perf_counter()
    model.train()

    def after(out):
        gatecore.check_finite_gates(model)
        got = removed_got(model)
        ctrl.update(out.step, cfg.steps, got)
        if out.step % 10 == 1 or out.step == cfg.steps:
            lm = out.task.item()
            curve.append(
                {
                    "step": out.step,
                    "lm_loss": lm,
                    "penalty": out.penalty.item(),
                    "removed": got,
                    "knob": ctrl.knob,
                    "seconds": time.perf_counter() - t0,
                }
            )
            print(
                f"  step {out.step:4d}  lm {lm:.3f}  removed {got:.3f}  knob {ctrl.knob:.3f}  "
                f"{(time.perf_counter() - t0) / out.step:.1f} s/step",
                flush=True,
            )

    train_loop(
        model,
        (chunks[torch.randint(len(chunks), (cfg.batch,), generator=gen)] for _ in range(cfg.steps)),
        lambda m, ids: m(input_ids=ids, labels=ids).loss,
        opt,
        scheduler=sched,
        objective=objective,
        controller=ctrl,
        control=False,
        total=cfg.steps,
        after=after,
        label=f"sparsify to {asked:g} removed",
    )
    model.eval()
    return {"curve": curve, "train_seconds": time.perf_counter() - t0, "final_keep_target": ctrl.knob}


def evaluate_stage(dense, gated, heldout, acts, cfg: SparsifyConfig) -> dict:
    """Held-out perplexity of the trained gates, their selection alone, and both baselines at the same counts."""
    counts = closed_counts(gated)
    out = {"gates": perplexity(gated, heldout, cfg.eval_batch)}
    selection = copy.deepcopy(gated)
    open_gates_to_one(selection)
    out["gates_selection"] = perplexity(selection, heldout, cfg.eval_batch)
    del selection
    for name, a in (("magnitude", None), ("activation", acts)):
        base = copy.deepcopy(dense)
        gatecore.add_gates(base)
        prune_like(base, counts, a)
        out[name] = {**perplexity(base, heldout, cfg.eval_batch), "removed_got": removed_got(base)}
        del base
    return out


def speed(dense, gated, cfg: SparsifyConfig) -> dict:
    small = gatecore.compress(copy.deepcopy(gated)).eval()
    rec = {"sizes": sizes(dense, small, cfg.seq)}
    if cfg.speed_repeats:
        t = time_generation({"dense": dense, "compressed": small}, 1, 128, 64, cfg.speed_repeats, 1, "cpu", cfg.seed)
        rec["decode_speedup"] = t["compressed"]["decode_tokens_per_s"] / t["dense"]["decode_tokens_per_s"]
        rec["prefill_speedup"] = t["dense"]["prefill_ms"] / t["compressed"]["prefill_ms"]
        rec["timings"] = t
    return rec


def run(cfg: SparsifyConfig) -> Path:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    dense, tok = load(cfg.model)
    train = token_chunks(tok, corpus_texts("train"), cfg.seq)
    heldout = token_chunks(tok, corpus_texts("heldout"), cfg.seq, cfg.heldout_chunks)
    print(f"corpus: {len(train)} training chunks, {len(heldout)} held-out chunks of {cfg.seq} tokens", flush=True)
    done = [r for r in read_jsonl(cfg.out) if _same_setup(r, cfg)]
    head = {"weights": QUANT_NOTE if cfg.model != TINY else "tiny random", "train_chunks": len(train)}
    if not any(r["kind"] == "dense" for r in done):
        t = time.perf_counter()
        append_jsonl(
            cfg.out,
            {
                **provenance(_config_dict(cfg), cfg.seed),
                **head,
                "kind": "dense",
                "removed_asked": 0.0,
                "removed_got": 0.0,
                "ppl": perplexity(dense, heldout, cfg.eval_batch),
                "eval_seconds": time.perf_counter() - t,
            },
        )
    gated = copy.deepcopy(dense)
    gatecore.add_gates(gated, sigma=cfg.sigma, reg_sigma=cfg.reg_sigma)
    gatecore.mark_trainable(gated, gates=True, lora=False, bias="none", head=False)
    acts, gen = None, torch.Generator().manual_seed(cfg.seed)
    for i, asked in enumerate(sorted(cfg.removed)):
        ckpt = Path(cfg.checkpoints) / f"sparsify_s{round(100 * asked)}.pt"
        prior = [r for r in done if r["kind"] == "stage" and r["removed_asked"] == asked]
        if prior and ckpt.is_file():
            gatecore.load_trainable(gated, ckpt)
            gen.manual_seed(cfg.seed + i + 1)
            print(f"stage {asked}: done, continuing from {ckpt}")
            continue
        print(f"stage {asked}: training {cfg.steps} steps", flush=True)
        trained = train_stage(gated, train, asked, cfg, gen)
        gen.manual_seed(cfg.seed + i + 1)  # the next stage's batches do not depend on whether this one was resumed
        correction = correct_removed(gated, asked)
        got = removed_got(gated)
        gatecore.save_trainable(gated, ckpt, removed_asked=asked, removed_got=got, config=_config_dict(cfg))
        if acts is None:
            probe = copy.deepcopy(dense)
            gatecore.add_gates(probe)
            acts = activation_rms(probe, train[: cfg.calib_chunks], cfg.eval_batch)
            del probe
        t = time.perf_counter()
        ppl = evaluate_stage(dense, gated, heldout, acts, cfg)
        rec = {
            **provenance(_config_dict(cfg), cfg.seed),
            **head,
            "kind": "stage",
            "removed_asked": asked,
            "removed_got": got,
            "correction": correction,
            **trained,
            "ppl": ppl,
            "eval_seconds": time.perf_counter() - t,
            "checkpoint": str(ckpt.relative_to(ROOT)) if ckpt.is_relative_to(ROOT) else str(ckpt),
            **speed(dense, gated, cfg),
        }
        append_jsonl(cfg.out, rec)
        print(
            f"stage {asked}: got {got:.3f}; ppl gates {ppl['gates']['ppl']:.2f}, selection {ppl['gates_selection']['ppl']:.2f}, "
            f"magnitude {ppl['magnitude']['ppl']:.2f}, activation {ppl['activation']['ppl']:.2f}; "
            f"decode speedup {rec.get('decode_speedup', math.nan):.2f}x",
            flush=True,
        )
    return Path(cfg.out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.decoder.sparsify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(ap, SparsifyConfig, choices={"objective": ["params", "target", "l0"]}, items={"removed": float})
    cfg = from_args(SparsifyConfig, ap.parse_args(argv))
    if any(not 0 < r < 1 for r in cfg.removed):
        ap.error(f"--removed fractions must be in (0, 1), got {list(cfg.removed)}")
    for name in ("steps", "batch", "heldout_chunks", "calib_chunks", "eval_batch", "threads"):
        if getattr(cfg, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.seq < 2 or cfg.gate_lr <= 0 or cfg.lam < 0:
        ap.error("--seq must be >= 2, --gate-lr > 0 and --lam >= 0")
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
