import os

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
    return dict(tok(["a gripping, beautifully acted film .", "the plot is thin and the jokes fall flat",
                     "an hour and a half of my life i will not get back"], padding=True, return_tensors="pt"))


__all__ = ["tiny_model", "tiny_batch"]
