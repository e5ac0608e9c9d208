"""Finetune a sequence-classification model with gates, LoRA or both through the Hugging Face Trainer.

    python -m analysis.finetune.hf_finetune                                     # MiniLM, Rotten Tomatoes, gates, 30% removed
    python -m analysis.finetune.hf_finetune --task SST-2 --method gates+lora --removed 0.4 --epochs 2
    python -m analysis.finetune.hf_finetune --model roberta-base --task csv --data DIR --text-cols review --label-col stars
    torchrun --nproc_per_node=2 -m analysis.finetune.hf_finetune --out runs/hf_ddp                  # DDP, same script
    accelerate launch --multi_gpu --num_processes 2 -m analysis.finetune.hf_finetune --out runs/hf_ddp  # the same, via Accelerate

This is the script to copy: data through `analysis.data` (GLUE, rotten_tomatoes, a CSV/TSV folder, or
`hf:<dataset>` online), the model through `gatecore.setup_method`, training through `gatecore.GateTrainer`
(plain `transformers.Trainer` for `lora`), and for gate methods the compressed model saved as an
ordinary Hugging Face folder in <out>/compressed. The classifier reads the model's own pooled output
(for BERT the [CLS] pooler), which is what `from_pretrained` users get; the study runner's mean
pooling is not used here. Dev metrics of the gated and the compressed model go to <out>/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # offline unless the user clears it

from analysis.cli import add_options, from_args, option  # noqa: E402
from analysis.finetune.validate import ArgumentParser, ConfigError, cli  # noqa: E402
from gatecore import defaults  # noqa: E402 (after the offline default: gatecore loads transformers)

# defaults, visible
MODEL = None  # None: the offline all-MiniLM-L6-v2; any local folder or hub name
TASK = "rotten_tomatoes"
METHOD = "gates"
REMOVED, OBJECTIVE = defaults.REMOVED, defaults.OBJECTIVE  # the gate settings: the library's (gatecore/defaults.py)
EPOCHS, BATCH_SIZE, MAX_LEN = 1, 32, 64
LR, HEAD_LR, GATE_LR, LAM = 1e-3, defaults.HEAD_LR, defaults.GATE_LR, defaults.LAM
TRAIN_EXAMPLES, DEV_EXAMPLES = 2000, None
OUT = "runs/hf_finetune"


@dataclass(frozen=True)
class HFFinetuneConfig:
    model: str | None = option(MODEL, "local folder or hub name; None: the offline all-MiniLM-L6-v2")
    task: str = option(TASK, "GLUE name (SST-2, MRPC, ...), rotten_tomatoes, csv, hf:PATH[:CONFIG]")
    method: str = option(METHOD, "finetuning method")
    removed: float = option(REMOVED, "fraction of the gated weights to remove")
    objective: str = option(OBJECTIVE, "sparsity objective (docs/design.md §1)")
    epochs: float = option(EPOCHS, "training epochs")
    batch_size: int = option(BATCH_SIZE, "training batch size, per device")
    max_len: int = option(MAX_LEN, "max tokens per example")
    lr: float = option(LR, "learning rate of the adapted weights")
    head_lr: float = option(HEAD_LR, "learning rate of the fresh task head")
    gate_lr: float = option(GATE_LR, "learning rate of the gate parameters")
    lam: float = option(LAM, "sparsity weight")
    train_examples: int | None = option(TRAIN_EXAMPLES, "fixed-seed train subset (0: all)")
    dev_examples: int | None = option(DEV_EXAMPLES, "fixed-seed dev subset; None: all")
    seed: int = option(0, "seed")
    out: str = option(OUT, "output folder (trainer files, compressed model, metrics.json)")
    data: str | None = option(None, "folder of train/dev CSV/TSV files (task 'csv')")
    text_cols: tuple[str, ...] | None = option(None, "text column(s) of --data / hf: tasks")
    label_col: str | None = option(None, "label column of --data / hf: tasks")
    regression: bool = option(False, "--data / hf: labels are numeric scores")
    glue_dir: str | None = option(None, "GLUE folder; None: $GLUE_DIR or data/glue")
    max_steps: int = option(-1, "stop after this many steps (-1: epochs)")


class Tokenized:
    """A map-style dataset of tokenized examples (padding is left to the collator)."""

    def __init__(self, tok, split, max_len: int):
        cols = list(zip(*split.texts))
        self.enc = tok(*[list(c) for c in cols[:2]], truncation=True, max_length=max_len)
        self.labels = list(split.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {**{k: v[i] for k, v in self.enc.items()}, "labels": self.labels[i]}


def run(cfg: HFFinetuneConfig) -> dict:
    """Train, evaluate on dev, compress (gate methods); returns (and writes) the metrics."""
    import numpy as np
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    import gatecore
    from analysis.data import load_task
    from analysis.provenance import provenance

    if cfg.method not in gatecore.METHODS or cfg.method in ("full", "bias", "head"):
        raise ValueError(f"method must be gates, lora or gates+lora here, got {cfg.method!r}")
    gated = cfg.method in gatecore.GATE_METHODS
    try:  # validated before any loading
        gate_cfg = (
            gatecore.GateConfig(
                removed=cfg.removed, objective=cfg.objective, lam=cfg.lam, gate_lr=cfg.gate_lr, head_lr=cfg.head_lr
            )
            if gated
            else None
        )
        gatecore.resolve_model(cfg.model)
    except (ValueError, OSError) as e:
        raise ConfigError(str(e)) from None
    task = load_task(
        cfg.task,
        glue=cfg.glue_dir,
        data_dir=cfg.data,
        text_cols=cfg.text_cols,
        label_col=cfg.label_col,
        regression=cfg.regression,
        train_examples=cfg.train_examples,
        dev_examples=cfg.dev_examples,
    )
    model, tok = gatecore.load_model(cfg.model, num_labels=task.num_labels)
    gatecore.setup_method(model, cfg.method)
    out = Path(cfg.out)
    args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=cfg.lr,
        warmup_steps=0.06,
        weight_decay=0.0,
        seed=cfg.seed,
        logging_steps=20,
        save_strategy="no",
        report_to=[],
        ddp_find_unused_parameters=False,
        use_cpu=not __import__("torch").cuda.is_available(),
    )

    def metrics(pred) -> dict:
        logits = pred.predictions
        preds = logits.squeeze(-1).tolist() if task.num_labels == 1 else np.argmax(logits, -1).tolist()
        return task.score(preds, list(pred.label_ids))

    common = dict(
        model=model,
        args=args,
        train_dataset=Tokenized(tok, task.train, cfg.max_len),
        eval_dataset=Tokenized(tok, task.dev, cfg.max_len),
        processing_class=tok,
        data_collator=DataCollatorWithPadding(tok),
        compute_metrics=metrics,
    )
    if gated:
        trainer = gatecore.GateTrainer(**common, gate_config=gate_cfg)
    else:  # LoRA: the head at its own rate, like the study runner
        trainer = Trainer(**common)
        trainer.optimizer = __import__("torch").optim.AdamW(
            gatecore.param_groups(model, cfg.lr, cfg.head_lr), weight_decay=0.0
        )
    trainer.train()
    result = {
        **provenance(asdict(cfg), cfg.seed, str(args.device)),
        "method": cfg.method,
        "task": task.name,
        "metric": task.metric,
        "dev": trainer.evaluate(),
    }
    if gated:
        rep = gatecore.gate_report(trainer.model)
        small = trainer.save_compressed(str(out / "compressed"))
        result.update(
            removed_asked=cfg.removed,
            removed_got=rep.removed_fraction,
            dev_compressed=Trainer(
                model=small,
                args=args,
                eval_dataset=common["eval_dataset"],
                data_collator=common["data_collator"],
                compute_metrics=metrics,
            ).evaluate(),
        )
    if args.should_save:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


def parse_args(argv=None) -> HFFinetuneConfig:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(
        ap,
        HFFinetuneConfig,
        choices={"method": ["gates", "lora", "gates+lora"], "objective": ["params", "target", "l0"]},
    )
    cfg = from_args(HFFinetuneConfig, ap.parse_args(argv))
    return replace(cfg, train_examples=cfg.train_examples or None)


def run_command(argv) -> int:
    res = run(parse_args(argv))
    import torch.distributed as dist

    main_process = not dist.is_initialized() or dist.get_rank() == 0  # one summary line, from rank 0 only
    if dist.is_initialized():  # the Trainer leaves the group open; gloo can abort at interpreter exit
        dist.destroy_process_group()
    if main_process and res.get("dev"):
        line = f"{res['task']} {res['method']}: dev {res['metric']} {res['dev'].get('eval_' + res['metric'])}"
        if "removed_got" in res:
            line += (
                f", removed {res['removed_got']:.1%} (asked {res['removed_asked']:.0%}), compressed dev "
                f"{res['dev_compressed'].get('eval_' + res['metric'])}"
            )
        print(line)
    return 0


def main(argv=None) -> int:
    """The command line; bad input ends in one line `error: ...` and exit status 2 (analysis/finetune/validate.py)."""
    return cli(run_command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
