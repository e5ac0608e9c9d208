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
# # 01 Does the stochastic-gate process converge?
#
# **The claim.** FineGates (arXiv 2602.09169) states that training its stochastic row/column gates *provably converges*: the relaxed objective has a Polyak-Lojasiewicz (PL) property, ||grad F||^2 >= 2 mu (F - F*), which would give gradient descent a linear rate; an earlier version proved a Lipschitz-continuous gradient of the relaxed objective, hence convergence of SGD to a stationary point. The theorem text is not available to us, so we check the claim empirically where the right answer is known.
#
# **The setting** (docs/design.md §1). Gates z = clamp(tanh(theta) + 0.5 + sigma * eps, 0, 1) on the rows and columns of a frozen weight, eval gate clamp(mu + 0.5, 0, 1); the sparsity objective uses P(open) = Phi((mu + 0.5) / reg_sigma). There are **two sigmas**: the forward noise `sigma` (default 0.1) and the regulariser's `reg_sigma` (default 0.5); both are swept below.
#
# **The planted problems** (`analysis/convergence/planted.py`): (a) `linear`: a frozen random W, target from W with 25% of rows and 25% of columns switched off; (b) `mlp`: a frozen two-layer ReLU teacher with dead hidden units and input features, the student is the same network with gates on its first layer; (c) `lowrank`: the honest counter-case, the target is W plus a rank-2 change, where LoRA is well specified and gates are not. LoRA (r = 8, alpha = 16, `gatecore.LoRALinear`) runs on the same problems.
#
# **What is measured** (`analysis/convergence/study.py`) along the path, over seeds: the expected objective F(theta) = E_eps[L] + lam R (exact in closed form for the linear teachers, via censored-normal moments of z; Monte Carlo with common random numbers for the MLP), the gap F - F* (F* = best of: L-BFGS from the planted optimum, the path, L-BFGS from the end point; for LoRA on linear teachers the exact reduced-rank-regression optimum), ||grad F||^2, the PL ratio ||grad F||^2 / (2 (F - F*)), the fraction of binary eval gates, and precision/recall of the removed rows+columns against the planted ones.

# %%
import os, tempfile
from pathlib import Path
from IPython.display import Image, display
from dataclasses import replace
from analysis.convergence.config import ConvergenceConfig
from analysis.convergence.plots import make_figures, summary_table
from analysis.convergence.study import run, write
from analysis.constants import FIGURES, RESULTS, study_results
from analysis.provenance import small_mode

# small mode (CI): a tiny problem and few steps; default: the module defaults (a few minutes on 2 CPU cores)
SMALL = dict(m=16, n=16, hidden=16, samples=128, steps=300, seeds=2, evals=20, polish_iters=30, draws=64)
cfg = ConvergenceConfig(**(SMALL if small_mode() else {}))
out = Path(os.environ.get("GATECORE_FIGURES_DIR") or tempfile.mkdtemp(prefix="convergence_nb_"))  # never results/
print("small mode:", small_mode(), "| writing to", out)
print({k: getattr(cfg, k) for k in ("steps", "seeds", "m", "n", "optimizer", "sigma", "reg_sigma", "lam", "objective")})


# %% [markdown]
# ## 1. The three planted problems, gates vs LoRA

# %%
def run_and_save(name, cfg, sweep=None, values=(None,)):
    write(cfg, run(cfg, sweep, values, progress=False), out / "convergence" / f"{name}.json", sweep)

for problem in ("linear", "mlp", "lowrank"):
    run_and_save(problem, replace(cfg, problem=problem))

# %% [markdown]
# ## 2. Where it should fail: sigma too small, the penalty flat (reg_sigma = sigma), lam too large

# %%
gates_only = replace(cfg, methods="gates")
run_and_save("linear_lam", gates_only, "lam", [0.0, 0.1, 1.0, 3.0])
run_and_save("linear_sigma_lam0", replace(gates_only, lam=0.0), "sigma", [0.01, 0.1, 0.3])
run_and_save("linear_reg_sigma", gates_only, "reg_sigma", [0.1, 0.5])
print(summary_table(out))

# %%
made = make_figures(out, out)
for p in made:
    if p.stem in ("convergence_gap", "convergence_grad_pl", "convergence_gate_trajectories"):  # the rest: below
        display(Image(filename=str(p)))

# %% [markdown]
# ## 3. The committed full runs
#
# The figures under `figures/` come from `results/convergence/*.json`, made by the commands recorded in each file (`python -m analysis.convergence --seeds 5`, `--problem mlp --seeds 5`, `--problem lowrank --seeds 5`, and one sweep per file, e.g. `--methods gates --sweep lam --values 0 0.03 0.1 0.3 1 2 3 5`; `make figures` redraws them). Their measured numbers (medians over seeds; `decades` = log10 of the gap reduction over the run, `slope p` = gap ~ t^-p over the last decade of steps, `theta` = Lojasiewicz exponent in ||grad F|| ~ gap^theta, PL means theta = 1/2, `min PL` = smallest PL ratio after 1% of the steps):

# %%
print(summary_table(RESULTS) if list(study_results("convergence").glob("*.json")) else "no committed convergence results")
for name in ("convergence_recovery", "convergence_lojasiewicz"):
    path = FIGURES / f"{name}.png"
    if path.exists():
        display(Image(filename=str(path)))

# %% [markdown]
# ## Conclusion, from the committed runs (the table above; commands in each `results/convergence/*.json`)
#
# **Convergence to the planted optimum holds when the gate noise reaches the clamp.** On the planted linear and MLP problems (5 seeds; Adam lr 0.05, sigma 0.1, reg_sigma 0.5, l0 with lam 0.1) the sampled gate process closes exactly the planted rows and columns in every seed: precision = recall = 1.000, every eval gate binary. It has found the support (mean precision and recall >= 0.95) by about step 50 of 2000. The same holds across n = 16..128, init mean 0.5..2, Adam lr 0.01..0.3, plain SGD and exact gradient descent on F.
#
# **The rate is not the linear rate a PL inequality would give.** F - F* falls 3.3 decades in 2000 steps. The late gap goes like t^-1 (log-log slope 1.04 linear, 1.01 MLP) and the Lojasiewicz exponent (||grad F|| ~ gap^theta) is 0.97 / 0.95 under Adam, so the PL ratio shrinks with the gap (minimum 9e-5, still falling). Why: the infimum of F puts closed gates at theta -> -inf, where tanh saturates, and the l0 term keeps paying about e^(2 theta) there, so the gradient and the gap vanish together. With lam = 0 the tail is much faster (late slope 4.4), which points at the regulariser as the source of the slow tail.
#
# Under plain SGD and exact GD on F, theta is about 0.5-0.6, so a local PL-like relation holds, but its constant is tiny: the PL ratio stays around 1e-5 to 1e-4 along the whole path, and the gap falls in a staircase as the gates close one after another. The eval gates are binary long before F has converged, so the slow tail costs nothing in the recovered support.
#
# LoRA (r 8) on the same problems reaches its exact optimum (reduced-rank regression), with theta 0.3-0.65, 6.5 decades (Adam; 6.0 in an earlier run of the same command: near its optimum LoRA's gap reaches float rounding, so its last half decade is not reproducible) or 7.2 (SGD), and a PL ratio that stays at or above about 2e-3. PL ratios depend on the parametrisation; theta does not.
#
# **Where it fails.**
# - *sigma too small.* With lam = 0, sigma = 0.01 and 0.03 never move the gates: 0.0 decades, precision = recall = 0, PL ratio 4e-101 and 3e-17. F is flat at init because at mu = 0.76 the noise almost never leaves the clamp at 1. Even at sigma = 0.1 the PL ratio at init is only about 5e-6. The wide regulariser (reg_sigma 0.5, lam 0.1) rescues small sigma (recovery 1.000), but the open gates then stop short of 1 (binary 0.76 at sigma 0.01).
# - *flat penalty.* reg_sigma = sigma = 0.1 behaves like lam = 0: recall 0.979, and the support is found only around step 900.
# - *lam too large.* At lam = 1, 17% of the gates end non-binary. lam = 2 is critical: 0.5 decades, precision 0.52. lam >= 3 closes every gate (precision 0.250, the planted fraction). F is still minimised (3.7 decades), but its minimiser is no longer the planted support. Balancing the data cost of a needed column (about 1/n) against the penalty saved (lam (P_open - P_closed) / (2n)) puts the threshold near lam = 2 / 0.84, about 2.4.
# - *the counter-case, a low-rank target.* Gates cannot express it. Their gap stalls after 1.3 decades at the gate-noise floor, with 17% of the gates non-binary, while LoRA's gap falls 6.4 decades.
#
# **What this says about the paper's claim.** The relaxed objective is smooth, and the stochastic process converges to a stationary point that recovers the planted structure. That agrees with the earlier version's "Lipschitz gradient, so SGD converges to a stationary point". A PL inequality with a useful uniform constant in the trained parameters theta is *not* what we measure. The PL ratio is tiny at init (the clamp is flat) and small or decaying along the path, so F converges sublinearly (about O(1/t) under Adam). A PL-type statement in other coordinates (mu under its box constraint, or a proximal-PL) was not tested here.
#
