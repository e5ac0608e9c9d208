"""gatecore: row/column stochastic gates and LoRA on frozen pretrained weights, physical compression, and
Hessians of the adapter parameters (gatecore.hessian, imported on its own: `from gatecore.hessian import ...`)."""

from .accounting import (
    GateReport,
    LayerGates,
    ParamCount,
    check_finite_gates,
    count_parameters,
    gate_report,
    gated_layers,
    nonfinite_gates,
)
from .checkpoint import load_trainable, save_trainable
from .compress import compress, layer_sizes
from .export import load_compressed, save_compressed
from .families import find_head
from .gates import Gate, GatedLinear, track_input_means
from .inject import add_gates, add_lora, find_targets, mark_trainable, merge_lora
from .lora import LoRALinear
from .methods import GATE_METHODS, METHODS, param_groups, setup_method
from .onnx_export import export_onnx, onnx_session
from .parameters import gate_parameters, head_parameters, lora_parameters
from .patterns import random_gate_pattern
from .peft_io import load_peft_adapter, save_peft_adapter
from .penalty import expected_kept_fraction, kurtosis_weights, sparsity_penalty
from .pretrained import (
    DECODER_MODEL,
    OFFLINE_MODEL,
    decoder_gguf_path,
    load_causal_lm,
    load_model,
    local_model_dir,
    resolve_model,
)
from .size import SizeReport, size_report
from .train import Objective, train_loop, train_step

__all__ = [
    "setup_method",
    "METHODS",
    "GATE_METHODS",
    "param_groups",
    "gate_parameters",
    "lora_parameters",
    "head_parameters",
    "GateTrainer",
    "GateConfig",
    "Objective",
    "train_loop",
    "train_step",
    "Gate",
    "GatedLinear",
    "LoRALinear",
    "add_gates",
    "add_lora",
    "merge_lora",
    "mark_trainable",
    "find_head",
    "find_targets",
    "count_parameters",
    "ParamCount",
    "gate_report",
    "GateReport",
    "LayerGates",
    "gated_layers",
    "sparsity_penalty",
    "expected_kept_fraction",
    "local_model_dir",
    "resolve_model",
    "load_model",
    "OFFLINE_MODEL",
    "load_causal_lm",
    "decoder_gguf_path",
    "DECODER_MODEL",
    "save_trainable",
    "load_trainable",
    "compress",
    "layer_sizes",
    "save_compressed",
    "load_compressed",
    "random_gate_pattern",
    "size_report",
    "SizeReport",
    "track_input_means",
    "kurtosis_weights",
    "check_finite_gates",
    "nonfinite_gates",
    "export_onnx",
    "onnx_session",
    "save_peft_adapter",
    "load_peft_adapter",
]


def __getattr__(name):
    """The Trainer integration imports transformers' Trainer (and accelerate): loaded on first use only."""
    if name in ("GateTrainer", "GateConfig"):
        from . import hf_trainer

        return getattr(hf_trainer, name)
    raise AttributeError(f"module 'gatecore' has no attribute {name!r}")
