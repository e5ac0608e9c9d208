import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

from gatecore.tiny import TINY_KINDS, tiny_batch, tiny_model

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(params=TINY_KINDS)
def kind(request):
    return request.param


@pytest.fixture(scope="session")
def minilm():
    """(model, tokenizer) of the offline all-MiniLM-L6-v2, eval mode, float32; clone before changing."""
    from gatecore import load_model

    model, tok = load_model(num_labels=2)
    return model.eval(), tok


@pytest.fixture(scope="session")
def minilm_batch(minilm):
    _, tok = minilm
    return dict(
        tok(
            [
                "a gripping, beautifully acted film .",
                "the plot is thin and the jokes fall flat",
                "an hour and a half of my life i will not get back",
            ],
            padding=True,
            return_tensors="pt",
        )
    )


__all__ = ["tiny_model", "tiny_batch"]


@pytest.fixture
def exact_rmsnorm(monkeypatch):
    """LLaMA's RMSNorm rounds through float32 even in a float64 model; keep it float64 so 1e-10 means something."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(LlamaRMSNorm, "forward", forward)


@pytest.fixture
def folder(tmp_path):
    """A word-level toy task the tiny model can learn a little: label = 'good' in the text."""
    rng = random.Random(0)
    words = ["good", "bad", "film", "plot", "dull", "fine", "acting", "long"]
    for name, n in (("train", 96), ("dev", 40)):
        lines = ["text,label"]
        for _ in range(n):
            t = " ".join(rng.choice(words) for _ in range(5))
            lines.append(f"{t},{int('good' in t)}")
        (tmp_path / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return tmp_path
