"""LoRA adapters in PEFT's format: gatecore -> PEFT folder -> PeftModel.from_pretrained, and a PEFT folder ->
gatecore LoRALinear, with the same outputs; the committed MiniLM LoRA checkpoint through PEFT; refusals."""

import copy
import json

import pytest
import torch

import gatecore as gc
from gatecore.peft_io import load_peft_adapter, save_peft_adapter
from gatecore.tiny import tiny_batch, tiny_model

peft = pytest.importorskip("peft", reason="peft (a test-only dependency, requirements.txt) is not installed")


def lora_model(kind, seed=0):
    model = tiny_model(kind, seed=seed)
    gc.add_lora(model, r=2, alpha=6)
    gc.mark_trainable(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=g))  # B starts at zero: make the update show
    return model.eval()


@torch.no_grad()
def test_gatecore_lora_to_peft(kind, tmp_path):
    model = lora_model(kind)
    batch = tiny_batch(model)
    folder = save_peft_adapter(model, tmp_path / "adapter")
    loaded = peft.PeftModel.from_pretrained(tiny_model(kind), folder).eval()  # same seed: same frozen base
    assert torch.allclose(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=1e-6)
    assert not torch.allclose(tiny_model(kind)(**batch).logits, model(**batch).logits, atol=1e-3)  # the adapter matters


@torch.no_grad()
def test_peft_lora_to_gatecore(kind, tmp_path):
    targets = ["q_proj", "v_proj"] if kind == "llama" else ["query", "value"]
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="SEQ_CLS", use_rslora=True)
    pm = peft.get_peft_model(tiny_model(kind), config)
    torch.manual_seed(0)
    for n, p in pm.named_parameters():
        if p.requires_grad:
            p.add_(0.3 * torch.randn_like(p))
    pm.save_pretrained(tmp_path / "peft")
    ours = tiny_model(kind)
    added = load_peft_adapter(ours, tmp_path / "peft")
    assert len(added) == 4 and all(isinstance(m, gc.LoRALinear) for m in added.values())
    batch = tiny_batch(ours)
    assert torch.allclose(ours(**batch).logits, pm.eval()(**batch).logits, rtol=0, atol=1e-6)
    # and back again: the folder we write loads in PEFT to the same outputs
    gc.mark_trainable(ours)
    back = peft.PeftModel.from_pretrained(tiny_model(kind), save_peft_adapter(ours, tmp_path / "again")).eval()
    assert torch.allclose(back(**batch).logits, ours(**batch).logits, rtol=0, atol=1e-6)


@torch.no_grad()
def test_minilm_lora_checkpoint_through_peft(minilm, minilm_batch, tmp_path):
    model = copy.deepcopy(minilm[0])
    gc.load_trainable(model, "results/hessian/checkpoints/SST-2_lora-qv_seed0.pt")  # trained LoRA r 8 on q, v
    folder = save_peft_adapter(model.eval(), tmp_path / "adapter")
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(minilm[0]), folder).eval()
    assert torch.allclose(loaded(**minilm_batch).logits, model(**minilm_batch).logits, rtol=0, atol=1e-5)


def test_refusals(tmp_path):
    gated = lora_model("bert")
    gc.add_gates(gated)
    with pytest.raises(ValueError, match="has gates"):
        save_peft_adapter(gated, tmp_path / "a")
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_peft_adapter(tiny_model("bert"), tmp_path / "a")
    biased = lora_model("bert")
    gc.mark_trainable(biased, bias="all")
    with pytest.raises(ValueError, match="besides LoRA and the head"):
        save_peft_adapter(biased, tmp_path / "a")
    folder = save_peft_adapter(lora_model("bert"), tmp_path / "ok")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    model = tiny_model("bert")
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(ValueError, match="use_dora=True"):
        load_peft_adapter(model, folder)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not fit the model"):
        load_peft_adapter(tiny_model("llama"), folder)
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter folder"):
        load_peft_adapter(model, tmp_path / "nothing")
    assert not any(isinstance(m, gc.LoRALinear) for m in model.modules())
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
