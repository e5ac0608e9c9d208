"""The real all-MiniLM-L6-v2 (float32): compressed == gated at a ~30% removal pattern."""

import copy

import torch

import gatecore as gc


def test_minilm_compressed_equals_gated(minilm, minilm_batch):
    model = copy.deepcopy(minilm[0])
    gc.add_gates(model)
    rep = gc.random_gate_pattern(model, 0.3, seed=0)
    assert 0.28 < rep.removed_fraction < 0.33
    with torch.no_grad():
        ref = model(**minilm_batch, output_hidden_states=True)
        small = gc.compress(copy.deepcopy(model))
        out = small(**minilm_batch, output_hidden_states=True)
    for a, b in [(out.logits, ref.logits), (out.hidden_states[-1], ref.hidden_states[-1])]:
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-5
    size = gc.size_report(minilm[0], small)
    assert type(small) is type(minilm[0])
    assert abs(size.encoder_linear_removed - rep.removed_fraction) < 0.01 and size.padding_weights == 0
    assert size.compressed_params == sum(p.numel() for p in small.parameters())
