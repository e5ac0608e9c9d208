"""FineGates inside the Hugging Face `Trainer`: one CPU, one GPU, or many processes (torchrun / Accelerate).

    model = gatecore.setup_method(AutoModelForSequenceClassification.from_pretrained(...), "gates")
    trainer = GateTrainer(model=model, args=TrainingArguments(...), train_dataset=..., gate_config=GateConfig(removed=0.3))
    trainer.train()
    trainer.save_compressed("out/compressed")        # an ordinary Hugging Face folder, smaller matrices

What the integration adds to the Trainer (docs/design.md §1):
- the loss: task loss (the model's own) + lam * scale * ramp(step) * penalty(objective, target), where the
  ramp warms lam up linearly and (target, scale) come from the sparsity controller: gatecore.train's
  `Objective` (`GateConfig.training_objective()`), the term every study loop adds. The Trainer's own loop
  still owns the forward/backward, gradient accumulation, clipping, the optimizer and scheduler steps;
  the controller is updated from `on_step_end`;
- the controller (`SparsityController`, the same object the study runner uses, split range by default), updated after every
  optimizer step from the measured eval-gate removed fraction, so the removed fraction meets the request;
  with `correct_at_end` the exact final correction (`correct_removed`) runs when training ends;
- separate learning rates: gates (`gate_lr`), task head (`head_lr`), the rest (`args.learning_rate`), with
  the studies' linear warm-up/decay schedule (`args.warmup_steps`, a count or a fraction);
- gate statistics in the Trainer's own logs (so any `report_to` gets them): removed fraction asked vs got,
  the controller's knob, and kept rows/columns per module type;
- checkpoint/resume through the Trainer's own mechanism: gates are model parameters (saved with the
  model), the controller's state and each rank's gate-noise generator are saved in `trainer_state.json`.

Distributed (DDP through torchrun or `accelerate launch`): gates are ordinary replicated parameters, so
their gradients are all-reduced and every rank holds the same thetas after each step; the controller reads
the eval gates (a function of theta only) and so measures the same value on every rank. Gate noise is drawn
per rank from its own generator, seeded `args.seed + rank`, so ranks do not share noise draws.
"""

from __future__ import annotations

import base64
import copy
import re
from dataclasses import dataclass

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from . import defaults
from .accounting import check_finite_gates, gate_report, gated_layers
from .checks import check_bool, check_fraction, check_positive, check_real
from .compress import compress
from .export import save_compressed
from .gates import Gate, track_input_means
from .methods import param_groups, warmup_linear_schedule
from .penalty import KINDS
from .sparsity_control import LAM_GAIN, SparsityController, correct_removed
from .train import Objective

NOISE_SEED_STRIDE = 1  # rank r draws gate noise from seed + r


@dataclass(frozen=True)
class GateConfig:
    """The sparsity side of a gates run; learning rate, epochs, batch size stay in TrainingArguments."""

    removed: float = defaults.REMOVED  # the request: fraction of the gated weights to remove, in [0, 1)
    objective: str = defaults.OBJECTIVE  # params | target | l0 (docs/design.md §1)
    lam: float = defaults.LAM  # weight of the penalty once warmed up
    lam_warmup: float = defaults.LAM_WARMUP  # fraction of the steps over which lam ramps from 0
    gate_lr: float | None = defaults.GATE_LR  # None = args.learning_rate
    head_lr: float | None = defaults.HEAD_LR  # None = args.learning_rate
    control: bool = True  # steer the penalty so the eval-gate removed fraction meets `removed`
    split_range: bool = True  # the controller also raises lam where the knob alone cannot get there
    control_reset: bool = defaults.CONTROL_RESET  # split range: lam back to 1 once the removal reaches `removed`
    control_recenter: bool = defaults.CONTROL_RECENTER  # integral back to 0 once a reopening push has got there
    correct_at_end: bool = True  # exact final correction to within `tol` (needs control)
    tol: float = 0.02
    kurtosis_tau: float | None = None

    def __post_init__(self):
        check_fraction("removed", self.removed)
        if self.objective not in KINDS:
            raise ValueError(f"objective must be one of {KINDS}, got {self.objective!r}")
        check_real("lam", self.lam, low=0)
        check_real("lam_warmup", self.lam_warmup, low=0, high=1)
        for name in ("gate_lr", "head_lr", "kurtosis_tau"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        check_bool("control", self.control)
        check_bool("split_range", self.split_range)
        check_bool("control_reset", self.control_reset)
        check_bool("control_recenter", self.control_recenter)
        check_bool("correct_at_end", self.correct_at_end)
        check_positive("tol", self.tol)

    def training_objective(self) -> Objective:
        """The sparsity term as gatecore.train's Objective (target and lam scale come from the controller)."""
        return Objective(self.lam, self.objective, lam_warmup=self.lam_warmup, kurtosis_tau=self.kurtosis_tau)


class GateSparsityCallback(TrainerCallback, ExportableState):
    """Holds the controller and the per-rank noise generator; its state travels in trainer_state.json."""

    def __init__(
        self,
        objective: str = "params",
        removed: float = 0.3,
        lam_warmup: float = 0.2,
        control: bool = True,
        split_range: bool = True,
        reset: bool = False,  # False: what a state saved before the setting existed resumes with
        recenter: bool = False,  # likewise
    ):
        self.controller = SparsityController(
            objective,
            removed,
            start=lam_warmup,
            lam_gain=LAM_GAIN if split_range else 0.0,
            reset=reset,
            recenter=recenter,
        )
        self.control_on = control
        self.noise_state: str | None = None  # the rank's gate-noise generator state, base64 (for resume)
        self.generator: torch.Generator | None = None
        self._init = {
            "objective": objective,
            "removed": removed,
            "lam_warmup": lam_warmup,
            "control": control,
            "split_range": split_range,
            "reset": reset,
            "recenter": recenter,
        }

    def state(self) -> dict:
        if self.generator is not None:
            self.noise_state = base64.b64encode(self.generator.get_state().numpy().tobytes()).decode()
        c = self.controller
        return {
            "args": dict(self._init),
            "attributes": {
                "integral": c.integral,
                "knob": c.knob,
                "escalation": c.escalation,
                "last_got": c.last_got,
                "noise_state": self.noise_state,
            },
        }

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if state.global_step > 0 and isinstance(saved, dict):  # resumed: controller and noise from the checkpoint
            attrs = saved.get("attributes", {})
            self.controller.integral, self.controller.knob = float(attrs["integral"]), float(attrs["knob"])
            self.controller.escalation = float(attrs.get("escalation", 1.0))
            self.controller.last_got = attrs.get("last_got")
            self.noise_state = attrs.get("noise_state")
        gates = [m for m in model.modules() if isinstance(m, Gate)]
        self.generator = torch.Generator(device=gates[0].theta.device)
        if self.noise_state is not None and state.global_step > 0:
            self.generator.set_state(torch.frombuffer(bytearray(base64.b64decode(self.noise_state)), dtype=torch.uint8))
        else:
            self.generator.manual_seed(args.seed + NOISE_SEED_STRIDE * args.process_index)
        for g in gates:
            g.generator = self.generator

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.control_on:
            self.controller.update(state.global_step, state.max_steps, gate_report(model).removed_fraction)


class GateTrainer(Trainer):
    """`Trainer` with the gates' sparsity objective, controller, learning rates and logging (module docstring)."""

    def __init__(self, *args, gate_config: GateConfig | None = None, **kwargs):
        cfg = gate_config or GateConfig()
        if not isinstance(cfg, GateConfig):
            raise TypeError(f"gate_config must be a gatecore.GateConfig, got {type(cfg).__name__}")
        model = kwargs.get("model", args[0] if args else None)
        if model is None or not gated_layers(model):
            raise ValueError(
                "GateTrainer needs a model with gates: call gatecore.setup_method(model, 'gates') "
                "(or gatecore.add_gates) before building the trainer"
            )
        check_finite_gates(model)
        if cfg.kurtosis_tau is not None and cfg.objective != "target":
            raise ValueError(
                f"kurtosis_tau weights the 'target' objective (as in the paper); got objective={cfg.objective!r}"
            )
        super().__init__(*args, **kwargs)
        # The penalty is added to the model's per-batch mean loss. Trainer's token-count path would rescale the
        # task loss by the number of processes (and skip the accumulation division) whenever the forward takes
        # **kwargs, even for models whose loss ignores num_items_in_batch (sequence classification): that would
        # change lam's weight with the world size. The mean path keeps task:penalty fixed on 1 or N processes.
        self.model_accepts_loss_kwargs = False
        self.gate_config = cfg
        self.add_callback(
            GateSparsityCallback(
                cfg.objective,
                cfg.removed,
                cfg.lam_warmup,
                cfg.control,
                cfg.split_range,
                cfg.control_reset,
                cfg.control_recenter,
            )
        )
        if cfg.kurtosis_tau is not None:
            track_input_means(self.model)

    @property
    def sparsity(self) -> GateSparsityCallback:
        """The live callback (the Trainer replaces it with a restored copy on resume)."""
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, GateSparsityCallback))

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            cfg = self.gate_config
            groups = param_groups(self.model, self.args.learning_rate, cfg.head_lr, cfg.gate_lr)
            self.optimizer = torch.optim.AdamW(groups, weight_decay=self.args.weight_decay)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = warmup_linear_schedule(
                optimizer or self.optimizer,
                num_training_steps,
                warm_steps=self.args.get_warmup_steps(num_training_steps),
            )
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        cfg = self.gate_config
        if model.training and cfg.lam > 0:  # the term gatecore.train_step adds
            term, _ = cfg.training_objective().term(
                self.accelerator.unwrap_model(model),
                self.state.global_step,
                max(1, self.state.max_steps),
                self.sparsity.controller,
            )
            loss = loss + term
        if not torch.isfinite(loss.detach()).all():
            raise FloatingPointError(
                f"non-finite loss at step {self.state.global_step}: stopping before the gates "
                "are corrupted (lower the learning rates or lam)"
            )
        return (loss, outputs) if return_outputs else loss

    def gate_stats(self) -> dict:
        """Removed fraction asked vs got, the controller's knob, and kept rows/columns per module type."""
        rep = gate_report(self.accelerator.unwrap_model(self.model))
        stats = {
            "gates/removed_asked": self.gate_config.removed,
            "gates/removed_got": rep.removed_fraction,
            "gates/knob": self.sparsity.controller.knob,
            "gates/lam_scale": self.sparsity.controller.lam_scale,
        }
        by_type: dict[str, list[float]] = {}
        for l in rep.layers:
            kind = re.sub(r"^.*?\.\d+\.", "", l.name)  # the name inside its layer: attention.self.query, ...
            by_type.setdefault(f"gates/rows_kept/{kind}", []).append(l.rows_kept / l.out_features)
            by_type.setdefault(f"gates/cols_kept/{kind}", []).append(l.cols_kept / l.in_features)
        stats.update({k: sum(v) / len(v) for k, v in by_type.items()})
        return stats

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs or "train_loss" in logs:  # training logs only, not evaluation
            logs = {**logs, **self.gate_stats()}
        super().log(logs, start_time)

    def train(self, *args, **kwargs):
        out = super().train(*args, **kwargs)
        cfg = self.gate_config
        if cfg.control and cfg.correct_at_end:
            fix = correct_removed(self.accelerator.unwrap_model(self.model), cfg.removed, cfg.tol)
            self.log({f"gates/correction_{k}": v for k, v in fix.items()})
        return out

    def save_compressed(self, output_dir: str) -> torch.nn.Module:
        """Compress a copy of the trained model (eval gates folded, closed rows/columns removed) and save it
        as an ordinary Hugging Face folder (reload with `from_pretrained` when uniform, else
        `gatecore.load_compressed`); only the main process writes. Returns the compressed model."""
        small = compress(copy.deepcopy(self.accelerator.unwrap_model(self.model)).eval())
        if self.args.should_save:
            save_compressed(small, output_dir)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
        return small
