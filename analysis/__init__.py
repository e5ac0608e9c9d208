"""Runnable studies: python -m analysis.<name>. Every run stays offline unless told otherwise."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
