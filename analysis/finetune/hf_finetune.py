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
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # offline unless the user clears it

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
    model: str | None = MODEL
    task: str = TASK
    method: str = METHOD
    removed: float = REMOVED
    objective: str = OBJECTIVE
    epochs: float = EPOCHS
    batch_size: int = BATCH_SIZE
    max_len: int = MAX_LEN
    lr: float = LR
    head_lr: float = HEAD_LR
    gate_lr: float = GATE_LR
    lam: float = LAM
    train_examples: int | None = TRAIN_EXAMPLES
    dev_examples: int | None = DEV_EXAMPLES
    seed: int = 0
    out: str = OUT
    data: str | None = None
    text_cols: tuple[str, ...] | None = None
    label_col: str | None = None
    regression: bool = False
    glue_dir: str | None = None
    max_steps: int = -1


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
    default = HFFinetuneConfig()
    ap.add_argument(
        "--model", default=default.model, help="local folder or hub name (default: offline all-MiniLM-L6-v2)"
    )
    ap.add_argument(
        "--task", default=default.task, help="GLUE name (SST-2, MRPC, ...), rotten_tomatoes, csv, hf:PATH[:CONFIG]"
    )
    ap.add_argument("--method", default=default.method, choices=["gates", "lora", "gates+lora"])
    ap.add_argument("--removed", type=float, default=default.removed, help="fraction of the gated weights to remove")
    ap.add_argument("--objective", default=default.objective, choices=["params", "target", "l0"])
    ap.add_argument("--epochs", type=float, default=default.epochs)
    ap.add_argument("--max-steps", type=int, default=default.max_steps, help="stop after this many steps (-1: epochs)")
    ap.add_argument("--batch-size", type=int, default=default.batch_size, help="per device")
    ap.add_argument("--max-len", type=int, default=default.max_len)
    ap.add_argument("--lr", type=float, default=default.lr)
    ap.add_argument("--head-lr", type=float, default=default.head_lr)
    ap.add_argument("--gate-lr", type=float, default=default.gate_lr)
    ap.add_argument("--lam", type=float, default=default.lam)
    ap.add_argument(
        "--train-examples", type=int, default=default.train_examples, help="fixed-seed train subset (0: all)"
    )
    ap.add_argument("--dev-examples", type=int, default=default.dev_examples)
    ap.add_argument("--seed", type=int, default=default.seed)
    ap.add_argument("--out", default=default.out, help="output folder (trainer files, compressed model, metrics.json)")
    ap.add_argument("--data", help="folder of train/dev CSV/TSV files (task 'csv')")
    ap.add_argument("--text-cols", nargs="+", help="text column(s) of --data / hf: tasks")
    ap.add_argument("--label-col", help="label column of --data / hf: tasks")
    ap.add_argument("--regression", action="store_true")
    ap.add_argument("--glue-dir", help="GLUE folder (default: $GLUE_DIR or data/glue)")
    ap.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of a bad-input error"
    )
    values = vars(ap.parse_args(argv))
    values["train_examples"] = values["train_examples"] or None
    values["text_cols"] = tuple(values["text_cols"]) if values["text_cols"] else None
    return HFFinetuneConfig(**values)


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
