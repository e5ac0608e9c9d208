"""The optimization race (issue 13, item 1(d)): the same optimizer, from the same start, on the same batches: how
many steps do gates and LoRA need to reach a given training loss?

    python -m analysis.hessian.race                       # SST-2, the defaults below (~20 min, one thread)
    python -m analysis.hessian.race --steps 40 --seeds 0  # a quick look

Protocol (RaceConfig's defaults):
- Data: `train_examples` SST-2 train examples drawn with `data_seed` (analysis.hessian.setup.read_task), at most
  `max_length` tokens. The loss that is raced is measured on a fixed evaluation set: the first `eval_examples` of
  those training examples (an optimization race, not generalization), every `eval_every` steps, with a deterministic
  forward (model.eval(): gates at their eval value clamp(tanh(theta) + 0.5, 0, 1); LoRA as it is, no dropout). The
  running training loss (each step's batch, as trained) is recorded too.
- Start: pretrained MiniLM with the preset adapter sets of the Hessian study (setup.PRESETS): `gates-all` (gates on
  all six matrices of every layer, n = 41,472) and `lora-qv` (LoRA r = 8, alpha 16 on q, v, n = 73,728). Both start
  as the pretrained function exactly (every eval gate is 1 at init, B = 0), so both have the same loss at step 0.
- Head: by default a shared task head fitted beforehand and frozen (`head='frozen'`): a logistic regression (LBFGS,
  small L2) on the frozen pretrained encoder's pooled features of the training examples, the same weights for both
  methods and every seed. Why: the question is about the adapters' loss landscape, and the Hessian study holds the
  head fixed too; a jointly trained head gives both methods the same fast, head-driven drop from a random head
  (most of the early loss decrease), which masks the adapters' difference, and would add a third tuned rate.
  `--head joint` trains the seeded head jointly at `head_lr` for both instead.
- Optimizer: AdamW (betas 0.9, 0.999, no weight decay), linear warm-up over `warmup` steps, then constant. The
  objective is the task loss (cross-entropy) only for both methods: the gates' sparsity penalty is left out, so both
  optimize the same objective. The gates train as the method trains them: in training mode, fresh noise
  z = clamp(tanh(theta) + 0.5 + sigma eps, 0, 1) each forward (sigma = 0.1); the rest of the model is in eval mode
  (no dropout) for both, so that noise (and, for LoRA, none) is the only randomness besides the batch order.
- Seeds: the seed sets the batch order (one permutation of the training examples per epoch, the same for both
  methods), the adapters' init (gate thetas, LoRA A) and the gates' noise stream.
- Learning rates: each method's grid on `tune_seed`; the best rate is the one with the lowest eval loss at the last
  step (a diverged run counts as worst); a best rate at the edge of its grid is flagged. Then every seed at that rate.
- Reported: the eval-loss curves (mean and min-max over seeds), steps to each threshold (the first evaluated step at
  or below it; resolution `eval_every`), and the final losses: results/hessian/race_sst2.json (provenance and the
  command), results/hessian/race_sst2.md (table) and figures/hessian_race.png, both redrawn from the json alone by
  `python -m analysis.figures --only hessian-race`.

What it does not separate: steps-to-loss mixes the curvature of the loss with the scale of each parametrization
(tanh of theta vs LoRA's alpha / r and its zero-initialized B), with Adam's per-coordinate normalization (which
undoes much of that scale), and with the gates' noise.

Modules: config.py (RaceConfig), batches.py (the batches), study.py (the start, the shared head, the runs, the
record), loop.py (the optimizer loop), pick.py (lr pick, steps to a level, summary), report.py (table and figure),
__main__.py (the command line).
"""
