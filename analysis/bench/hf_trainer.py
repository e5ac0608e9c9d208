"""Step-time overhead of the Trainer integration (gatecore.GateTrainer) against the study runner (analysis.finetune.train).

    python -m analysis.bench.hf_trainer [--steps 8] [--rounds 3]

Same model (MiniLM, gates on all six matrices, biases on), same synthetic batches (batch x seq random
tokens, no padding), same optimizer, penalty and controller; the two loops alternate round by round in
this one process, so a drift of the machine hits both alike. Reported: median wall and CPU time per step
of each and their ratio (integration / runner). Writes results/bench/hf_trainer_overhead.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from analysis import doc_blocks
from analysis.cli import add_options, from_args, option
from analysis.constants import study_results
from analysis.provenance import provenance, read_record, write_json

BATCH, SEQ, STEPS, ROUNDS, THREADS = 32, 64, 8, 3, 1


@dataclass(frozen=True)
class HFTrainerBenchConfig:
    batch: int = option(BATCH, "sequences per step")
    seq: int = option(SEQ, "tokens per sequence")
    steps: int = option(STEPS, "optimizer steps per timed run")
    rounds: int = option(ROUNDS, "alternating rounds (runner, trainer)")
    threads: int = option(THREADS, "torch threads")
    out: str = option(str(study_results("bench") / "hf_trainer_overhead.json"), "results file")


def _data(n: int, seq: int, vocab: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (n, seq), generator=g)
    return [{"input_ids": r, "attention_mask": torch.ones(seq, dtype=torch.long), "labels": int(r[0] % 2)} for r in ids]


def _model():
    import gatecore

    model, _ = gatecore.load_model(num_labels=2)
    return gatecore.setup_method(model, "gates")


def time_runner(data, batch: int) -> tuple[float, float]:
    from analysis.data import Task
    from analysis.finetune.encoding import Encoded
    from analysis.finetune.train import train

    model = _model()
    enc = Encoded([x["input_ids"].tolist() for x in data], [x["labels"] for x in data])
    spec = dict(
        task="bench",
        method="gates",
        seed=0,
        lr=1e-3,
        head_lr=1e-2,
        gate_lr=0.2,
        epochs=1,
        batch_size=batch,
        lam=1.0,
        lam_warmup=0.2,
        objective="params",
        keep=0.7,
        control=True,
        pooling="cls",
        bucketed=False,
    )
    task = Task("bench", None, None, None, "accuracy", 2, ("0", "1"), "bench")
    w, c = time.perf_counter(), time.process_time()
    res = train(model, spec, task, enc, None, pad_id=0, device="cpu", curve_points=0, progress=False)
    return (time.perf_counter() - w) / res.steps, (time.process_time() - c) / res.steps


def time_trainer(data, batch: int) -> tuple[float, float]:
    from transformers import TrainingArguments

    from gatecore.hf_trainer import GateConfig, GateTrainer

    steps = len(data) // batch
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=batch,
            learning_rate=1e-3,
            warmup_steps=0.06,
            weight_decay=0.0,
            use_cpu=True,
            report_to=[],
            logging_steps=steps,
            save_strategy="no",
            disable_tqdm=True,
            max_grad_norm=0.0,
            dataloader_num_workers=0,
        )
        trainer = GateTrainer(model=_model(), args=args, train_dataset=data, gate_config=GateConfig(removed=0.3))
        w, c = time.perf_counter(), time.process_time()
        trainer.train()
        return (time.perf_counter() - w) / steps, (time.process_time() - c) / steps


def run(cfg: HFTrainerBenchConfig) -> Path:
    """Alternate the two loops `cfg.rounds` times; write and return the results file."""
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(cfg.threads)
    hf_logging.set_verbosity_error()
    data = _data(cfg.batch * cfg.steps, cfg.seq, 30000)
    runs = {"runner": [], "trainer": []}
    for r in range(cfg.rounds):
        for name, fn in (
            (("runner", time_runner), ("trainer", time_trainer))
            if r % 2 == 0
            else (("trainer", time_trainer), ("runner", time_runner))
        ):
            runs[name].append(fn(data, cfg.batch))
            print(f"round {r}: {name} {runs[name][-1][0] * 1e3:.0f} ms/step wall, {runs[name][-1][1] * 1e3:.0f} ms CPU")
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in runs.items()}
    ratio = {"wall": med["trainer"][0] / med["runner"][0], "cpu": med["trainer"][1] / med["runner"][1]}
    print(f"GateTrainer / study runner per step: {ratio['wall']:.3f}x wall, {ratio['cpu']:.3f}x CPU")
    return write_json(
        cfg.out,
        {**provenance(asdict(cfg), 0, "cpu"), "median_s_per_step": med, "ratio_trainer_vs_runner": ratio, "all": runs},
    )


def doc_block(results_dir) -> str | None:
    """docs/results.md's table of <results_dir>/bench/hf_trainer_overhead.json (None without it)."""
    path = study_results("bench", results_dir) / "hf_trainer_overhead.json"
    rec = read_record(path)
    if rec is None:
        return None
    med, ratio = rec["median_s_per_step"], rec["ratio_trainer_vs_runner"]
    rows = [
        [name, f"{med[key][0]:.2f}", f"{med[key][1]:.2f}"]
        for key, name in (("runner", "study runner"), ("trainer", "GateTrainer"))
    ]
    rows.append(["GateTrainer / runner", f"{ratio['wall']:.2f}x", f"{ratio['cpu']:.2f}x"])
    cfg = rec["config"]
    note = f"Medians of {cfg['rounds']} alternating rounds of {cfg['steps']} steps, batch {cfg['batch']} x {cfg['seq']}, {cfg['threads']} thread(s)."
    return f"{doc_blocks.table(['loop', 'wall s / step', 'CPU s / step'], rows)}\n\n{note} {doc_blocks.source(path, rec, __name__)}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap, HFTrainerBenchConfig)
    run(from_args(HFTrainerBenchConfig, ap.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
