"""A few GateTrainer steps on a tiny BERT and a planted task; run in-process by the tests or under torchrun.

    torchrun --nproc_per_node=2 tests/hf_trainer_run.py OUT_DIR [--steps 4] [--per-device 4]

Writes OUT_DIR/thetas_rank<r>.pt: the gate thetas after every optimizer step (and the controller's knob),
so the test can compare ranks with each other and with a single-process emulation.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import SequentialSampler
from transformers import TrainerCallback, TrainingArguments

import gatecore
from gatecore.hf_trainer import GateConfig, GateTrainer
from gatecore.tiny import tiny_model

SEQ, N_EXAMPLES = 8, 64


def planted_dataset(n: int = N_EXAMPLES, vocab: int = 64, seed: int = 0) -> list[dict]:
    """Label = whether token 5 occurs: learnable, deterministic."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, SEQ), generator=g)
    ids[: n // 2, 0] = 5
    return [
        {"input_ids": row, "attention_mask": torch.ones(SEQ, dtype=torch.long), "labels": int((row == 5).any())}
        for row in ids
    ]


def gated_tiny(seed: int = 0, dtype=torch.float32):
    model = tiny_model("bert", num_labels=2, seed=seed, dtype=dtype)
    return gatecore.setup_method(model, "gates").train()


class Sequential(GateTrainer):
    """Data in dataset order (each rank gets its consecutive share of every global batch)."""

    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


class RecordThetas(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        thetas = torch.cat([p.detach().flatten().clone() for p in gatecore.methods.gate_parameters(model)])
        self.steps.append(thetas)


def make_trainer(
    out: Path,
    steps: int,
    per_device: int,
    seed: int = 0,
    save_steps: int | None = None,
    gate_config: GateConfig | None = None,
    callbacks=(),
    dtype=torch.float32,
):
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=per_device,
        learning_rate=1e-3,
        warmup_steps=0,
        weight_decay=0.0,
        seed=seed,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        max_grad_norm=0.0,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
    )
    cfg = gate_config or GateConfig(
        removed=0.3, lam=1.0, lam_warmup=0.0, gate_lr=0.5, head_lr=1e-2, correct_at_end=False
    )
    return Sequential(
        model=gated_tiny(seed, dtype),
        args=args,
        train_dataset=planted_dataset(),
        gate_config=cfg,
        callbacks=list(callbacks),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--per-device", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rec = RecordThetas()
    trainer = make_trainer(a.out, a.steps, a.per_device, callbacks=[rec])
    trainer.train()
    rank = int(os.environ.get("RANK", 0))
    torch.save(
        {"thetas": rec.steps, "knob": trainer.sparsity.controller.knob, "world_size": trainer.args.world_size},
        a.out / f"thetas_rank{rank}.pt",
    )
    if torch.distributed.is_initialized():
        # Both ranks have written their files; skip interpreter teardown: gloo's threads there aborted a rank once (CI)
        # and destroy_process_group hung rank 0 once (locally).
        torch.distributed.barrier()
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
