"""Generation speed: prefill latency and decode tokens/s, dense vs compressed SmolLM2, one interleaved run.

    python -m analysis.decoder.generation                           # random structured 20/30/40% + the trained gates
    python -m analysis.decoder.generation --device cuda             # on a GPU when one is lent
    python -m analysis.decoder.generation --model tiny-llama --repeats 1   # seconds-long smoke run

Greedy decoding with the KV cache, written out (no sampling, no stop token): the prefill is one forward of the
prompt (batch x prompt tokens of random ids, full mask) that yields the first new token; then new_tokens - 1
one-token forwards reuse the cache. Each repeat runs every model in turn (interleaved: a drift of the shared
machine hits all alike); medians per model, ratios dense / compressed. Also recorded per pattern: the fraction
of all parameters and of the FLOPs per token the compression removes; the tied embedding / LM head is not
gated, so it stays, and its FLOPs (2 x hidden x vocab per token) are counted. Writes
results/decoder/generation_<device>.json. The weights are Q4_1-dequantized (analysis/decoder/models.py).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

import gatecore
from analysis.cli import add_options, from_args, option
from analysis.constants import study_results
from analysis.decoder.models import QUANT_NOTE, TINY, compressed, gated_random, load
from analysis.provenance import provenance, small_mode, write_json

TRAINED = study_results("decoder") / "gates" / "sparsify_s20.pt"  # committed trained gates (sparsify.py, 20% stage)


@dataclass(frozen=True)
class GenerationConfig:
    model: str | None = option(
        None, "model name or folder; None: the offline SmolLM2-135M-Instruct; tiny-llama: smoke run"
    )
    sparsity: tuple = option((0.2, 0.3, 0.4), "removed fractions of the random structured patterns")
    trained: str = option(str(TRAINED), "trained gates (gatecore.save_trainable) to time too; '' for none")
    batch: tuple = option((1, 8), "batch sizes")
    prompt: int = option(128, "prompt tokens")
    new_tokens: int = option(64, "generated tokens")
    repeats: int = option(5, "timed generations per model and batch")
    warmup: int = option(1, "untimed generations per model first")
    threads: int = option(1, "torch CPU threads")
    device: str = option("cpu", "cpu or cuda")
    seed: int = option(0, "seed of the random patterns and prompts")
    out: str = option(str(study_results("decoder")), "output folder")


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def generate_greedy(model, prompt: torch.Tensor, new_tokens: int, device="cpu") -> tuple[torch.Tensor, float, float]:
    """(new token ids (batch, new_tokens), prefill seconds, decode seconds): greedy, KV cache, no stop token."""
    _sync(device)
    t0 = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True)
    tok = out.logits[:, -1].argmax(-1, keepdim=True)
    _sync(device)
    t1 = time.perf_counter()
    toks, past = [tok], out.past_key_values
    for _ in range(new_tokens - 1):
        out = model(input_ids=tok, past_key_values=past, use_cache=True)
        tok, past = out.logits[:, -1].argmax(-1, keepdim=True), out.past_key_values
        toks.append(tok)
    _sync(device)
    return torch.cat(toks, 1), t1 - t0, time.perf_counter() - t1


def time_generation(
    models: dict, batch: int, prompt: int, new_tokens: int, repeats: int, warmup: int = 1, device="cpu", seed: int = 0
) -> dict:
    """{name: {"prefill_ms", "decode_ms_per_step", "decode_tokens_per_s", "n"}} (medians), interleaved repeats."""
    first = next(iter(models.values()))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, first.config.vocab_size, (batch, prompt), generator=g).to(device)
    for m in models.values():
        for _ in range(warmup):
            generate_greedy(m, ids, new_tokens, device)
    pre, dec = {n: [] for n in models}, {n: [] for n in models}
    for _ in range(repeats):
        for name, m in models.items():
            _, p, d = generate_greedy(m, ids, new_tokens, device)
            pre[name].append(p)
            dec[name].append(d / max(1, new_tokens - 1))
    out = {}
    for name in models:
        step = statistics.median(dec[name])
        out[name] = {
            "prefill_ms": 1e3 * statistics.median(pre[name]),
            "decode_ms_per_step": 1e3 * step,
            "decode_tokens_per_s": batch / step,
            "prefill_ms_all": [1e3 * x for x in pre[name]],
            "decode_ms_per_step_all": [1e3 * x for x in dec[name]],
            "n": repeats,
        }
    return out


def sizes(dense, small, seq: int) -> dict:
    """Fractions of all parameters and of the FLOPs per token (LM head included) that the compression removes."""
    rep = gatecore.size_report(dense, small, seq=seq)
    head = 2 * dense.get_output_embeddings().weight.numel()
    f_dense, f_small = rep.dense_flops_per_token + head, rep.compressed_flops_per_token + head
    return {
        **rep.as_dict(),
        "lm_head_flops_per_token": head,
        "flops_removed_with_head": 1 - f_small / f_dense,
        "all_params_removed": rep.params_removed,
    }


def patterns(cfg: GenerationConfig, dense) -> dict:
    """{name: (gated, removed_asked)}: random structured patterns and, when given, the trained gates."""
    out = {f"random_s{round(100 * s)}": (gated_random(dense, s, cfg.seed), s) for s in cfg.sparsity}
    if cfg.trained:
        gated = copy.deepcopy(dense)
        meta = gatecore.load_trainable(gated, cfg.trained)
        out["trained_" + Path(cfg.trained).stem] = (gated.eval(), meta.get("removed_asked"))
    return out


def run(cfg: GenerationConfig) -> Path:
    if small_mode():
        cfg = replace(cfg, repeats=1, warmup=0, sparsity=cfg.sparsity[:1], batch=cfg.batch[:1])
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda asked for, but torch sees no GPU")
    torch.set_num_threads(cfg.threads)
    dense, _ = load(cfg.model)
    dense = dense.to(cfg.device)
    models, records = {"dense": dense}, {}
    for name, (gated, asked) in patterns(cfg, dense).items():
        small = compressed(gated)
        records[name] = {
            "removed_asked": asked,
            "removed_got": gatecore.gate_report(gated).removed_fraction,
            "sizes": sizes(dense, small, cfg.prompt),
        }
        models[name] = small.to(cfg.device)
        del gated
        print(
            f"{name}: removed asked {asked}, got {records[name]['removed_got']:.3f}; all parameters removed "
            f"{records[name]['sizes']['all_params_removed']:.1%}, FLOPs/token removed (LM head in) "
            f"{records[name]['sizes']['flops_removed_with_head']:.1%}"
        )
    timings = []
    for batch in cfg.batch:
        t = time_generation(models, batch, cfg.prompt, cfg.new_tokens, cfg.repeats, cfg.warmup, cfg.device, cfg.seed)
        row = {"batch": batch, "timings": t}
        for name in records:
            row[name] = {
                "prefill_speedup": t["dense"]["prefill_ms"] / t[name]["prefill_ms"],
                "decode_speedup": t[name]["decode_tokens_per_s"] / t["dense"]["decode_tokens_per_s"],
            }
            print(
                f"batch {batch} {name:>22}: prefill {t[name]['prefill_ms']:8.1f} ms ({row[name]['prefill_speedup']:.2f}x), "
                f"decode {t[name]['decode_tokens_per_s']:7.1f} tok/s ({row[name]['decode_speedup']:.2f}x)"
            )
        print(
            f"batch {batch} {'dense':>22}: prefill {t['dense']['prefill_ms']:8.1f} ms, "
            f"decode {t['dense']['decode_tokens_per_s']:7.1f} tok/s"
        )
        timings.append(row)
    config = {f.name: list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v for f in fields(cfg)}
    out = {
        **provenance(config, cfg.seed, cfg.device),
        "weights": QUANT_NOTE if cfg.model != TINY else "tiny random",
        "patterns": records,
        "batches": timings,
    }
    path = write_json(Path(cfg.out) / f"generation_{cfg.device}{'_tiny' if cfg.model == TINY else ''}.json", out)
    print(f"wrote {path}")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.decoder.generation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(ap, GenerationConfig, choices={"device": ["cpu", "cuda"]}, items={"sparsity": float, "batch": int})
    cfg = from_args(GenerationConfig, ap.parse_args(argv))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda asked for, but torch sees no GPU")
    if cfg.trained and not Path(cfg.trained).is_file():
        ap.error(f"--trained {cfg.trained}: no such file (pass --trained '' to time random patterns only)")
    if any(not 0 <= s < 1 for s in cfg.sparsity):
        ap.error(f"--sparsity must be in [0, 1), got {list(cfg.sparsity)}")
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
