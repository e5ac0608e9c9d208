"""Gate, compress and generate with SmolLM2-135M offline, printing the speedup (the README's one command).

    make decoder-model && python -m analysis.decoder.demo
    python -m analysis.decoder.demo --gates ''  --sparsity 0.3   # a random structured pattern instead of trained gates

Loads the offline SmolLM2-135M-Instruct (Q4_1-dequantized, not the original bf16), puts gates on its seven
projections, loads the committed task-agnostic trained gates (analysis/decoder/sparsify.py; or closes a random
structured pattern), compresses the model to a smaller LlamaForCausalLM, answers a prompt greedily with the
dense, gated and compressed models, and times greedy decoding of the dense vs compressed model (interleaved).
Writes nothing.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from pathlib import Path

import torch

import gatecore
from analysis.cli import add_options, from_args, option
from analysis.decoder.generation import TRAINED, sizes, time_generation
from analysis.decoder.models import QUANT_NOTE


@dataclass(frozen=True)
class DemoConfig:
    gates: str = option(str(TRAINED), "trained gates (gatecore.save_trainable); '' for a random structured pattern")
    sparsity: float = option(0.3, "removed fraction of the random pattern")
    prompt: str = option("What is the capital of France?", "the question to answer")
    new_tokens: int = option(24, "tokens to generate")
    repeats: int = option(3, "interleaved timed generations per model")
    threads: int = option(1, "torch CPU threads")


def chat(model, tok, prompt: str, new_tokens: int) -> str:
    ids = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.decoder.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(ap, DemoConfig)
    args = from_args(DemoConfig, ap.parse_args(argv))
    if args.gates and not Path(args.gates).is_file():
        ap.error(f"--gates {args.gates}: no such file (pass --gates '' for a random pattern)")
    if not 0 <= args.sparsity < 1 or args.new_tokens < 1 or args.repeats < 1 or args.threads < 1:
        ap.error("--sparsity must be in [0, 1); --new-tokens, --repeats and --threads >= 1")
    torch.set_num_threads(args.threads)
    dense, tok = gatecore.load_causal_lm()
    print(f"weights: {QUANT_NOTE}")
    gated = copy.deepcopy(dense)
    if args.gates:
        meta = gatecore.load_trainable(gated, args.gates)
        source = f"trained gates {args.gates} (removed asked {meta.get('removed_asked')})"
    else:
        gatecore.add_gates(gated)
        gatecore.random_gate_pattern(gated, args.sparsity, seed=0)
        source = f"random structured pattern, {args.sparsity:.0%} asked"
    gated.eval()
    print(f"gates: {source}; removed {gatecore.gate_report(gated).removed_fraction:.1%} of the gated weights")
    small = gatecore.compress(copy.deepcopy(gated))
    sz = sizes(dense, small, 128)
    print(
        f"compressed: {sz['all_params_removed']:.1%} of all parameters and {sz['flops_removed_with_head']:.1%} "
        f"of the FLOPs per token removed (the tied embedding / LM head is not gated)"
    )
    for name, m in (("dense", dense), ("gated", gated), ("compressed", small)):
        print(f"{name:>10}: {chat(m, tok, args.prompt, args.new_tokens)!r}")
    t = time_generation({"dense": dense, "compressed": small}, 1, 128, 64, args.repeats)
    speed = t["compressed"]["decode_tokens_per_s"] / t["dense"]["decode_tokens_per_s"]
    print(
        f"decode (batch 1, prompt 128, 64 new tokens, {args.threads} thread(s)): dense "
        f"{t['dense']['decode_tokens_per_s']:.1f} tok/s, "
        f"compressed {t['compressed']['decode_tokens_per_s']:.1f} tok/s "
        f"-> speedup {speed:.2f}x; prefill speedup {t['dense']['prefill_ms'] / t['compressed']['prefill_ms']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
