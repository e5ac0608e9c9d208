"""Exactness on the real checkpoint (float32): what the tiny float64 tests prove, checked on SmolLM2-135M.

    python -m analysis.decoder.exactness              # writes results/decoder/exactness.json
    python -m analysis.decoder.exactness --model tiny-llama --out /tmp/x   # smoke run

Checks, each with its measured value and tolerance (relative to the largest logit):
  gates_init        gated model with every gate at init == the model (logits), float32, 1e-5
  lora_merged       LoRA (random nonzero B) merged == unmerged: r = 8 on q, v, and on all seven projections, float32, 1e-5
  exact64_sNN       compressed == gated eval in float64 (RMSNorm kept in float64), 1e-10: the exactness itself
  compressed_sNN    the same in float32: at most 4x the float32 rounding of the gated model itself (its distance
                    to the float64 gated model), since over 30 layers rounding alone exceeds 1e-5
  round_trip_sNN    save_compressed / load_compressed == the compressed model (exactly)
  generate_sNN      greedy generation with the KV cache (model.generate), compressed vs gated: the same tokens
  gqa_sNN           grouped KV heads stay consistent: per layer heads = groups x kv_heads, shapes agree
Inputs: real sentences, right-padded batch for the logits, left-padded batch for generation.
The weights are Q4_1-dequantized (analysis/decoder/models.py).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import torch

import gatecore
from analysis import doc_blocks
from analysis.cli import add_options, from_args, option
from analysis.constants import study_results
from analysis.decoder.models import QUANT_NOTE, TINY, compressed, exact_rmsnorm, gated_random, load
from analysis.provenance import provenance, read_record, write_json

PROMPTS = [
    "The capital of France is",
    "Gradient descent converges when the learning rate",
    "In 1969, the first humans to walk on the Moon were",
    "A good recipe for bread needs flour, water,",
]
RTOL = 1e-5


@dataclass(frozen=True)
class ExactnessConfig:
    model: str | None = option(
        None, "model name or folder; None: the offline SmolLM2-135M-Instruct; tiny-llama: smoke run"
    )
    sparsity: tuple = option((0.2, 0.3, 0.4), "removed fractions of the random structured patterns")
    trained: str = option("", "trained gates (gatecore.save_trainable) to check too; '' for none")
    new_tokens: int = option(32, "generated tokens per prompt")
    seed: int = option(0, "seed of the patterns and LoRA factors")
    threads: int = option(1, "torch CPU threads")
    out: str = option(str(study_results("decoder")), "output folder")


def _batch(tok, model, left: bool) -> dict:
    if not hasattr(tok, "pad_token_id") or not callable(tok):  # the tiny model's stand-in tokenizer
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, model.config.vocab_size, (len(PROMPTS), 9), generator=g)
        mask = torch.ones_like(ids)
        pad = slice(0, 3) if left else slice(-3, None)
        mask[0, pad], ids[0, pad] = 0, 1
        return {"input_ids": ids, "attention_mask": mask}
    tok.padding_side = "left" if left else "right"
    return dict(tok(PROMPTS, return_tensors="pt", padding=True))


@torch.no_grad()
def rel_diff(a, b, batch) -> float:
    """max |logits_a - logits_b| / max |logits_b| over the unpadded positions."""
    la, lb = a(**batch).logits.double(), b(**batch).logits.double()
    keep = batch["attention_mask"].bool()
    return ((la - lb)[keep].abs().max() / lb[keep].abs().max()).item()


@torch.no_grad()
def same_generation(a, b, batch, new_tokens: int, pad_id: int) -> dict:
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_id)
    ta, tb = a.generate(**batch, **kw), b.generate(**batch, **kw)
    n = batch["input_ids"].shape[1]
    agree = (ta[:, n:] == tb[:, n:]).float()
    first = [int(row.argmin()) if not row.all() else new_tokens for row in agree.bool()]
    return {"identical": bool(agree.all()), "token_agreement": agree.mean().item(), "first_difference": first}


def gqa_consistent(small) -> dict:
    out = []
    for layer, s in zip(small.model.layers, gatecore.layer_sizes(small)):
        att = layer.self_attn
        ok = (
            s.heads % s.kv_heads == 0
            and att.num_key_value_groups == s.heads // s.kv_heads
            and att.q_proj.out_features == s.heads * s.head_dim
            and att.k_proj.out_features == s.kv_heads * s.head_dim
            and att.v_proj.out_features == s.kv_heads * s.head_dim
            and att.o_proj.in_features == s.heads * s.head_dim
        )
        out.append(ok)
    sizes = [(s.heads, s.kv_heads, s.head_dim) for s in gatecore.layer_sizes(small)]
    return {"ok": all(out), "heads_kv_headdim_per_layer": sizes}


def lora_check(model, batch, targets, seed: int) -> float:
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    for mod in gatecore.add_lora(m, targets=targets, r=8, alpha=16).values():
        with torch.no_grad():
            mod.lora_B.copy_(0.02 * torch.randn(mod.lora_B.shape, generator=g))
    merged = gatecore.merge_lora(copy.deepcopy(m))
    return rel_diff(merged, m, batch)


def check_pattern(name: str, dense, gated, batch, gen_batch, cfg, pad_id: int) -> dict:
    small = compressed(gated)
    with exact_rmsnorm():
        g64 = copy.deepcopy(gated).double()
        s64 = compressed(g64)
        noise = rel_diff(gated, g64, batch)  # float32 rounding of the gated model itself
        out = {f"exact64_{name}": {"rel_diff": rel_diff(s64, g64, batch), "tol": 1e-10}}
    del g64, s64
    out[f"compressed_{name}"] = {
        "rel_diff": rel_diff(small, gated, batch),
        "float32_noise": noise,
        "tol": 4 * noise,
        "removed_got": gatecore.gate_report(gated).removed_fraction,
        "all_params_removed": gatecore.size_report(dense, small).params_removed,
    }
    with tempfile.TemporaryDirectory() as d:
        gatecore.save_compressed(small, d)
        back = gatecore.load_compressed(d)
        out[f"round_trip_{name}"] = {"rel_diff": rel_diff(back, small, batch), "tol": 0.0}
    out[f"generate_{name}"] = same_generation(small, gated, gen_batch, cfg.new_tokens, pad_id)
    out[f"gqa_{name}"] = gqa_consistent(small)
    return out


def run(cfg: ExactnessConfig) -> Path:
    torch.set_num_threads(cfg.threads)
    model, tok = load(cfg.model, dtype=torch.float32)
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    batch, gen_batch = _batch(tok, model, left=False), _batch(tok, model, left=True)
    checks = {}
    gated = copy.deepcopy(model)
    gatecore.add_gates(gated)
    checks["gates_init"] = {"rel_diff": rel_diff(gated.eval(), model, batch), "tol": RTOL}
    checks["lora_merged_qv"] = {"rel_diff": lora_check(model, batch, None, cfg.seed), "tol": RTOL}
    checks["lora_merged_all7"] = {
        "rel_diff": lora_check(model, batch, gatecore.families.gate_targets(model), cfg.seed),
        "tol": RTOL,
    }
    del gated
    for s in cfg.sparsity:
        checks.update(
            check_pattern(f"s{round(100 * s)}", model, gated_random(model, s, cfg.seed), batch, gen_batch, cfg, pad_id)
        )
        print({k: v for k, v in checks.items() if k.endswith(f"s{round(100 * s)}")}, flush=True)
    if cfg.trained:
        gated = copy.deepcopy(model)
        gatecore.load_trainable(gated, cfg.trained)
        checks.update(
            check_pattern("trained_" + Path(cfg.trained).stem, model, gated.eval(), batch, gen_batch, cfg, pad_id)
        )
    for k, v in checks.items():
        v["passed"] = v["identical"] if "identical" in v else v["ok"] if "ok" in v else v["rel_diff"] <= v["tol"]
        print(
            f"{k:>28}: {'pass' if v['passed'] else 'FAIL'}  "
            + ", ".join(
                f"{a}={b}" for a, b in v.items() if a in ("rel_diff", "tol", "token_agreement", "first_difference")
            )
        )
    config = {f.name: list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v for f in fields(cfg)}
    out = {
        **provenance(config, cfg.seed),
        "weights": QUANT_NOTE if cfg.model != TINY else "tiny random",
        "dtype": str(model.dtype),
        "prompts": PROMPTS,
        "checks": checks,
        "all_passed": all(v["passed"] for v in checks.values()),
    }
    path = write_json(Path(cfg.out) / f"exactness{'_tiny' if cfg.model == TINY else ''}.json", out)
    print(f"all passed: {out['all_passed']}; wrote {path}")
    return path


def doc_block(results_dir) -> str | None:
    """docs/results.md's table of <results_dir>/decoder/exactness.json (None without it): a column per pattern."""
    path = study_results("decoder", results_dir) / "exactness.json"
    rec = read_record(path)
    if rec is None:
        return None
    checks = rec["checks"]
    names = [k.removeprefix("exact64_") for k in checks if k.startswith("exact64_")]

    def cells(get) -> list[str]:
        return [get(checks, n) for n in names]

    def diff(x: float) -> str:
        return "0" if x == 0 else f"{x:.1e}"

    rows = [
        ["gated weights removed (got)"] + cells(lambda c, n: f"{c['compressed_' + n]['removed_got']:.1%}"),
        ["all parameters removed"] + cells(lambda c, n: f"{c['compressed_' + n]['all_params_removed']:.1%}"),
        ["compressed == gated, float64 (tol 1e-10)"] + cells(lambda c, n: diff(c["exact64_" + n]["rel_diff"])),
        ["compressed == gated, float32 / the gated model's own float32 rounding"]
        + cells(
            lambda c, n: f"{diff(c['compressed_' + n]['rel_diff'])} / {diff(c['compressed_' + n]['float32_noise'])}"
        ),
        ["save / load round trip"] + cells(lambda c, n: diff(c["round_trip_" + n]["rel_diff"])),
        ["greedy generation with the KV cache: tokens that agree"]
        + cells(lambda c, n: f"{c['generate_' + n]['token_agreement']:.0%}"),
        ["grouped KV heads consistent"] + cells(lambda c, n: "yes" if c["gqa_" + n]["ok"] else "no"),
    ]
    head = ["check (differences: max abs. logit difference / max abs. logit)"] + [
        f"{n[1:]}% asked" if n[1:].isdigit() else n for n in names
    ]
    note = (
        f"Gates at init == the model: {diff(checks['gates_init']['rel_diff'])}; LoRA merged == unmerged, r = 8 on q, v "
        f"/ on all seven: {diff(checks['lora_merged_qv']['rel_diff'])} / {diff(checks['lora_merged_all7']['rel_diff'])} "
        f"(tol {checks['gates_init']['tol']:g}). All checks passed: {'yes' if rec['all_passed'] else 'no'}. "
        f"Weights: {rec['weights']}."
    )
    return f"{doc_blocks.table(head, rows)}\n\n{note} {doc_blocks.source(path, rec, __name__)}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.decoder.exactness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(ap, ExactnessConfig, items={"sparsity": float})
    cfg = from_args(ExactnessConfig, ap.parse_args(argv))
    if any(not 0 < s < 1 for s in cfg.sparsity):
        ap.error(f"--sparsity must be in (0, 1), got {list(cfg.sparsity)}")
    if cfg.trained and not Path(cfg.trained).is_file():
        ap.error(f"--trained {cfg.trained}: no such file")
    if cfg.new_tokens < 1:
        ap.error(f"--new-tokens must be >= 1, got {cfg.new_tokens}")
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
