"""Hessian spectrum of the gate or LoRA parameters of a model on a fixed set of task examples.

    python -m analysis.hessian --task SST-2 --adapters gates-all --noise-draws 2 --examples 8 --spectrum lanczos slq
    python -m analysis.hessian --task CoLA --method lora --lora-r 8 --train-steps 150 --save-checkpoint results/hessian/checkpoints/x.pt

Loss: mean cross-entropy (MSE for STS-B) of the classifier on the pooled encoder output over `--examples` training
examples, gates in eval mode (`--noise-draws 0`) or averaged over K fixed draws (the expected objective as K
grows), optionally + the sparsity penalty as trained (`--penalty`). Only the adapter parameters vary; head,
biases and frozen weights stay at their (initial or trained) values. `--precondition weight` analyses
D^{-1/2} H D^{-1/2}, D = diag(J^T J) (per unit of weight change, docs/design.md §11). Each spectrum gets the
matched-set kappas and the tolerance curve (gatecore.hessian.measures). One thread by default: on a busy
2-core machine 2 threads ran 20-30x slower. Runs print their expected duration before starting.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from analysis.cli import add_options, from_args, option, to_argv
from analysis.constants import ROOT, repo_path, study_results
from analysis.provenance import command, provenance, write_json
from gatecore import OFFLINE_MODEL, load_model, load_trainable, save_trainable
from gatecore.checkpoint import adapter_layout
from gatecore.hessian import (
    MAX_EXACT_N,
    METHODS,
    SLQ_PROBES,
    SLQ_STEPS,
    TOL,
    HessianOperator,
    Restricted,
    deflated,
    deflated_values,
    flat_vs_draws,
    lanczos,
    planned_products,
    products_to_accuracy,
    report_conditioning,
    saturated_mask,
    weight_scaled,
)
from gatecore.pooling import pooled_loss
from gatecore.train import Objective

from .penalty import as_trained_penalty, penalty_fn, penalty_kink
from .setup import PRESETS, build, encode, read_task
from .train import train_short

# ---- defaults -------------------------------------------------------------------------------------------
TARGETS = (r"attention\.self\.(query|value)",)  # without --adapters: the common LoRA layers, gates on the same
FLAT_DRAWS = (1, 2, 8, 64, 256)
PRESET_NAMES = {"gates-all": "gatesall", "lora-qv": "loraqv", "matched": "lora1all"}  # in file names
ADAPTER_SUFFIX = re.compile(r"\.(row_gate\.theta|col_gate\.theta|lora_A|lora_B)$")


@dataclass(frozen=True)
class HessianConfig:
    """One Hessian run; every field is a flag of the CLI (`--` + name with dashes)."""

    model: str = option(OFFLINE_MODEL, "model name or local folder")
    task: str = option("SST-2", "GLUE task folder name, or 'synthetic'")
    adapters: str = option("", "preset: gates-all | lora-qv | matched (sets method, targets, lora_r)")
    method: str = option("gates", "gates | lora (without --adapters)")
    targets: tuple = option(TARGETS, "layer name regexes (without --adapters)")
    lora_r: int = option(1, "LoRA rank (1 matches rows+cols gates on the same matrices; 8 is the common setting)")
    lora_alpha: float = option(16.0, "LoRA alpha (scale alpha / r)")
    checkpoint: str = option("", "trained adapter + head (gatecore.save_trainable); init otherwise")
    train_steps: int = option(0, "without checkpoint: train first (AdamW), then reload through the file")
    save_checkpoint: str = option("", "where --train-steps saves; empty: a temporary folder, not kept")
    lr_adapter: float = option(1e-2, "--train-steps: AdamW learning rate of the adapter")
    lr_head: float = option(1e-3, "--train-steps: AdamW learning rate of the task head")
    train_examples: int = option(512, "--train-steps: training examples (disjoint from the analysed ones)")
    train_batch: int = option(16, "--train-steps: batch size")
    examples: int = option(16, "examples in the fixed loss (train split, drawn with seed)")
    batch_size: int = option(0, "examples per batch inside the loss (0: one batch)")
    max_length: int = option(32, "tokens per example (truncation)")
    pooling: str = option(
        "mean", "sentence representation fed to the classifier: mean (what MiniLM was trained with) or cls"
    )
    noise_draws: int = option(4, "gates: K fixed draws averaged in the loss (0: eval gates)")
    penalty: str = option("none", "none | target | l0 | params | as-trained (from the checkpoint's meta)")
    lam: float = option(0.5, "penalty weight (and of --train-steps' penalty)")
    target_sparsity: float = option(0.3, "'target'/'params': requested sparsity, keep = 1 - this")
    reg_sigma: float = option(0.5, "regulariser's Phi scale (docs/design.md §1)")
    precondition: str = option("none", "none | weight (D^{-1/2} H D^{-1/2}, D = diag(J^T J), §11)")
    spectrum: tuple = option(("lanczos",), "exact | lanczos | slq | pyhessian | all")
    dtype: str = option("float64", "precision of the Hessian products")
    tol: float = option(TOL, "the SpectrumReport's own kappa_eff / zero tolerance; curves span 1e-8..1e-1")
    max_exact_n: int = option(MAX_EXACT_N, "largest n for the dense exact Hessian")
    slq_steps: int = option(SLQ_STEPS, "Lanczos steps per SLQ probe")
    slq_probes: int = option(SLQ_PROBES, "SLQ probe vectors")
    compare_power: bool = option(False, "also count products: pyhessian power iteration vs ARPACK (the CLI's Lanczos)")
    seed: int = option(0, "seed for examples, init, noise draws and probes")
    threads: int = option(1, "torch CPU threads (1: 2 threads ran 20-30x slower on a busy 2-core machine)")
    out: str = option("", "results JSON (default results/hessian/<name>.json, HessianConfig.name)")

    def resolved(self) -> tuple[str, str | None, int]:
        """(method, preset kind for gatecore.families or None, lora_r) after the --adapters preset."""
        if self.adapters:
            if self.adapters not in PRESETS:
                raise ValueError(f"--adapters must be one of {sorted(PRESETS)}, got {self.adapters!r}")
            return PRESETS[self.adapters]
        return self.method, None, self.lora_r

    def name(self, state: str) -> str:
        """<task>_<adapters>[_dW][_K<draws>][_S<SLQ steps>]_<state>_seed<k>: a results file name that carries every
        setting the sweep varies (K: gates only; S: when SLQ runs)."""
        method, _, r = self.resolved()
        adapters = PRESET_NAMES.get(self.adapters) or (method if method == "gates" else f"lora{r}")
        dw = "_dW" if self.precondition == "weight" else ""
        draws = f"_K{self.noise_draws}" if method == "gates" else ""
        slq = f"_S{self.slq_steps}" if {"slq", "all"} & set(self.spectrum) else ""
        return f"{self.task}_{adapters}{dw}{draws}{slq}_{state}_seed{self.seed}"


def _penalty(cfg: HessianConfig, meta: dict | None):
    if cfg.penalty == "none":
        return None, None
    if cfg.penalty == "as-trained":
        spec = as_trained_penalty(meta)
    else:
        spec = dict(lam=cfg.lam, objective=cfg.penalty, target=cfg.target_sparsity, reg_sigma=cfg.reg_sigma)
    return penalty_fn(spec["lam"], spec["objective"], spec["target"], spec["reg_sigma"], spec.get("kurtosis_tau")), spec


def _prepare(cfg: HessianConfig, progress: bool):
    """(model, tok, batches, num_labels, state, checkpoint record, training record, meta)."""
    method, kind, r = cfg.resolved()
    texts, labels, num_labels = read_task(cfg.task, cfg.examples, cfg.seed)
    model, tok = build(
        cfg.model, num_labels, method, cfg.targets, r, cfg.seed, kind, cfg.lora_alpha, reg_sigma=cfg.reg_sigma
    )
    ckpt, training, tmp = cfg.checkpoint, None, None
    if cfg.train_steps and not ckpt:
        objective = Objective(lam=cfg.lam, objective="target", target=cfg.target_sparsity, reg_sigma=cfg.reg_sigma)
        train_spec = objective.to_dict()  # saved with the checkpoint: --penalty as-trained reads it back
        tt, tl, _ = read_task(
            cfg.task, cfg.train_examples, cfg.seed, skip=cfg.examples
        )  # disjoint from the analysed ones
        losses = train_short(
            model,
            pooled_loss(cfg.pooling),
            encode(tok, tt, tl, cfg.train_batch, cfg.max_length),
            cfg.train_steps,
            cfg.lr_adapter,
            cfg.lr_head,
            objective,
            progress,
        )
        if not cfg.save_checkpoint:
            tmp = tempfile.TemporaryDirectory(prefix="hessian-ckpt-")
        ckpt = save_trainable(
            model,
            cfg.save_checkpoint or Path(tmp.name) / "trainable.pt",
            train_steps=cfg.train_steps,
            penalty=train_spec if method == "gates" else None,
        )
        training = dict(
            optimizer="AdamW",
            steps=cfg.train_steps,
            lr_adapter=cfg.lr_adapter,
            lr_head=cfg.lr_head,
            batch=cfg.train_batch,
            examples=cfg.train_examples,
            trainable="adapter + task head (no biases)",
            penalty=train_spec if method == "gates" else None,
            loss_first_last=[losses[0], losses[-1]],
        )
    state, meta, record = "init", None, ""
    if ckpt:  # always through the file: a fresh model, re-wrapped as recorded
        model, _ = load_model(cfg.model, num_labels=num_labels, attn_implementation="eager")
        meta = load_trainable(model, ckpt)
        if not adapter_layout(model)[method]:
            raise ValueError(f"checkpoint {ckpt} has no {method} layers, but the analysed method is {method}")
        state = (
            f"converged (finetuning run {meta['run_id']}, {meta['config'].get('epochs', '?')} epochs)"
            if meta.get("run_id") and meta.get("config")
            else f"trained ({meta.get('train_steps', '?')} steps)"
            if meta
            else "checkpoint"
        )
        record = (
            "temporary, not kept: regenerate with the recorded command and --save-checkpoint"
            if tmp is not None
            else repo_path(ckpt)
        )
        model.eval()
    if tmp is not None:
        tmp.cleanup()
    return (
        model,
        tok,
        encode(tok, texts, labels, cfg.batch_size or cfg.examples, cfg.max_length),
        num_labels,
        state,
        record,
        training,
        meta,
    )


def analyze(cfg: HessianConfig, progress: bool = True) -> dict:
    """Build (or load) the model, optionally train it, run the spectra; returns the results record."""
    torch.manual_seed(cfg.seed)
    method, _, r = cfg.resolved()
    model, tok, batches, num_labels, state, ckpt, training, meta = _prepare(cfg, progress)
    penalty, pen_spec = _penalty(cfg, meta)
    op = HessianOperator(
        model,
        batches,
        method,
        pooled_loss(cfg.pooling),
        noise_draws=cfg.noise_draws if method == "gates" else 0,
        seed=cfg.seed,
        dtype={"float64": torch.float64, "float32": torch.float32}[cfg.dtype],
        penalty=penalty if method == "gates" else None,
    )
    methods = list(METHODS) if "all" in cfg.spectrum else list(dict.fromkeys(cfg.spectrum))
    if "exact" in methods and op.n > cfg.max_exact_n:
        raise ValueError(
            f"n={op.n} {method} parameters is too large for --spectrum exact (max {cfg.max_exact_n}); "
            "use lanczos/slq, fewer --targets, or raise --max-exact-n"
        )
    if cfg.precondition not in ("none", "weight"):
        raise ValueError(f"--precondition must be 'none' or 'weight', got {cfg.precondition!r}")
    inner = None
    if cfg.precondition == "weight":
        if "pyhessian" in methods:
            raise ValueError("--precondition weight runs exact / lanczos / slq, not pyhessian")
        inner, mask = weight_scaled(op)
    else:
        mask = saturated_mask(op)
    deflate = mask is not None and (inner is not None or 0 < int(mask.sum()) <= op.n - 3)  # eigsh needs n >= 3
    n_eff = op.n - (int(mask.sum()) if deflate else 0)
    timed = inner if inner is not None else (Restricted(op, ~mask) if deflate else op)
    op.gradient()  # built once, not part of a product's cost
    t = time.perf_counter()
    for _ in range(2):
        timed.matvec(torch.randn(timed.n, dtype=op.dtype))
    per = (time.perf_counter() - t) / 2
    planned = sum(planned_products(m, n_eff, cfg.slq_steps, cfg.slq_probes) for m in methods) + (
        300 if cfg.compare_power else 0
    )
    print(
        f"n={op.n} ({n_eff} analysed), {per:.2f} s/product x ~{planned} products planned: "
        f"expected ~{per * planned / 60:.1f} min",
        flush=True,
    )
    kw = {
        "exact": dict(max_n=cfg.max_exact_n, progress=progress),
        "lanczos": dict(seed=cfg.seed, progress=progress),
        "slq": dict(steps=cfg.slq_steps, probes=cfg.slq_probes, seed=cfg.seed, progress=progress),
        "pyhessian": dict(seed=cfg.seed, density_steps=cfg.slq_steps),
    }
    # with the penalty, saturated gates keep its (diagonal) curvature: added back exactly instead of zeros
    fill = deflated_values(op, mask) if deflate and inner is None and op.penalty is not None else None
    reports = [
        deflated(m, op, mask, inner=inner, tol=cfg.tol, fill=fill, **kw[m])
        if deflate and m != "pyhessian"
        else METHODS[m](op, tol=cfg.tol, **kw[m])
        for m in methods
    ]
    ends = next((x for x in reports if x.method in ("exact", "lanczos")), None)
    cond = {x.method: report_conditioning(x, ends) for x in reports}
    record = {
        "setting": dict(
            task=cfg.task,
            method=method,
            adapters=cfg.adapters or None,
            lora_r=r if method == "lora" else None,
            targets=None if cfg.adapters else list(cfg.targets),
            matrices=sorted({ADAPTER_SUFFIX.sub("", n) for n, _ in op.named}),
            n=op.n,
            examples=cfg.examples,
            max_length=cfg.max_length,
            pooling=cfg.pooling,
            noise_draws=op.noise_draws,
            dtype=cfg.dtype,
            state=state,
            checkpoint=ckpt,
            penalty=pen_spec if method == "gates" else None,
            precondition="diag(J^T J) (docs/design.md §11)" if inner is not None else None,
            deflated=int(mask.sum()) if deflate else 0,
            loss=f"{'MSE' if num_labels == 1 else 'cross-entropy'} on {cfg.examples} train examples"
            + (" + sparsity penalty" if pen_spec and method == "gates" else ", no sparsity penalty"),
            tokens=int(sum(b["attention_mask"].sum() for b in batches)),
            n_saturated_gates=None if method != "gates" else int(saturated_mask(op).sum()),
            seconds_per_product=per,
            training=training,
        ),
        "reports": [x.as_dict() for x in reports],
        "conditioning": {k: v.as_dict() for k, v in cond.items() if v is not None},
    }
    if method == "gates":
        record["flat_vs_draws"] = dataclasses.asdict(flat_vs_draws(model, FLAT_DRAWS, cfg.seed))
        if pen_spec:
            record["penalty_kink"] = penalty_kink(model, pen_spec)
    if cfg.compare_power:
        ref = ends or lanczos(op, tol=cfg.tol, eig_tol=1e-10, progress=False)
        top = ref.lambda_max if abs(ref.lambda_max) >= abs(ref.lambda_min) else ref.lambda_min
        record["power_vs_lanczos"] = {"reference_method": ref.method, **products_to_accuracy(op, top, seed=cfg.seed)}
    record["eigenvalues"] = {x.method: (x.eigenvalues.tolist() if x.eigenvalues is not None else None) for x in reports}
    record["densities"] = {x.method: x.density for x in reports if x.density is not None}
    op.release()
    return record


def default_out(cfg: HessianConfig, record: dict) -> Path:
    state = record["setting"]["state"].split(" ")[0]  # init | trained | converged | checkpoint
    return study_results("hessian") / f"{cfg.name(state)}.json"


def run(cfg: HessianConfig, progress: bool = True) -> Path:
    """analyze + write the record with its provenance header and the exact command (`to_argv`)."""
    torch.set_num_threads(cfg.threads)
    record = analyze(cfg, progress)
    out = Path(cfg.out) if cfg.out else default_out(cfg, record)
    head = provenance(dataclasses.asdict(cfg), cfg.seed, "cpu")
    head["command"] = command("analysis.hessian", to_argv(cfg))
    path = write_json(out if out.is_absolute() else ROOT / out, {**head, **record})
    for x in record["reports"]:
        print(
            f"{x['method']:>9}: n={x['n']} products={x['products']} wall={x['wall_s']:.1f}s lambda_max={x['lambda_max']} "
            f"lambda_min={x['lambda_min']} negative={x['n_negative']} zero={x['n_zero']} kappa_eff={x['kappa_eff']}"
        )
    print(f"wrote {repo_path(path)}")
    return path


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.hessian", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    choices = {
        "adapters": ["", *PRESETS],
        "method": ["gates", "lora"],
        "pooling": ["mean", "cls"],
        "penalty": ["none", "target", "l0", "params", "as-trained"],
        "precondition": ["none", "weight"],
        "dtype": ["float64", "float32"],
        "spectrum": [*METHODS, "all"],
    }
    add_options(ap, HessianConfig, choices)
    return ap


def config_from_args(args: argparse.Namespace) -> HessianConfig:
    return from_args(HessianConfig, args)


def main(argv=None) -> int:
    ap = parser()
    cfg = config_from_args(ap.parse_args(argv))
    try:
        run(cfg)
    except (ValueError, FileNotFoundError) as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
