"""Build the offline GPU kit: one folder (< 64 MiB) that runs the finetuning protocol on a host with no network.

    python -m analysis.finetune.gpu_bundle --out bundle/        # here (about 10 s); then copy bundle/ to the host and run
    cd bundle && python -m analysis.finetune.gpu_protocol --bundle . --out results_gpu --workers 12

Contents (docs/design.md §6):
  model/      all-MiniLM-L6-v2 as float16 safetensors (45 MB; the float32 file is 91 MB) + config + tokenizer.
              The host upcasts it to float32 once (analysis.finetune.gpu_protocol) and trains in float32.
  glue/       <TASK>/train.tsv, dev.tsv of the protocol's tasks (~8 MB)
  gatecore/, analysis/   the project code (*.py, subpackages included)
  wheels/     wheels for packages the host lacks (none needed for a host with torch, transformers, numpy,
              tqdm, safetensors; pass --wheel FILE to add one)
  manifest.json   what is inside (sha256 of every file), the versions here, the build command
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from analysis.cli import add_options, from_args, option
from analysis.constants import GLUE_TASKS, ROOT
from analysis.data import glue_dir
from analysis.provenance import provenance, write_json
from gatecore.pretrained import OFFLINE_MODEL

MAX_MB = 64  # the transfer limit of the kit, MiB
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
CODE_DIRS = ("gatecore", "analysis")
# modules the host must import to run the protocol; a missing one must come as a wheel in wheels/
HOST_MODULES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "tqdm")


@dataclass(frozen=True)
class BundleConfig:
    out: Path = option(ROOT / "bundle", "bundle folder to (re)create")
    model: str | None = option(None, "model folder to ship; None: the offline all-MiniLM-L6-v2")
    glue_dir: str | None = option(None, "GLUE folder; None: $GLUE_DIR or data/glue")
    tasks: tuple = option(tuple(GLUE_TASKS), "GLUE task folders to ship")
    wheel: tuple = option(
        (), "a wheel file for a package the host lacks (repeatable); shipped in wheels/", action="append", nargs=None
    )
    max_mb: float = option(MAX_MB, "refuse a bundle larger than this many MiB")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_half_model(src: Path, dst: Path) -> dict:
    """Copy a Hugging Face model folder with its float weights cast to float16 (integer buffers unchanged)."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = src / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} not found: the bundle needs a model folder with model.safetensors "
            "(pytorch_model.bin is not supported here)"
        )
    dst.mkdir(parents=True, exist_ok=True)
    state = load_file(weights)
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(half, dst / "model.safetensors", metadata={"format": "pt"})
    for name in MODEL_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    if not (dst / "config.json").is_file():
        raise FileNotFoundError(f"{src} has no config.json; is it a Hugging Face model folder?")
    n = sum(v.numel() for v in state.values() if v.is_floating_point())
    name = OFFLINE_MODEL if src.name == "model" and "minilm" in str(src).lower() else src.name
    return {"name": name, "source": str(src), "parameters": n, "dtype_stored": "float16", "dtype_trained": "float32"}


def copy_glue(glue: Path, dst: Path, tasks=GLUE_TASKS) -> list[str]:
    for task in tasks:
        for split in ("train.tsv", "dev.tsv"):
            f = glue / task / split
            if not f.is_file():
                raise FileNotFoundError(
                    f"{f} not found: the protocol needs GLUE {task} {split} "
                    f"(layout <glue-dir>/<TASK>/{{train,dev}}.tsv; pass --glue-dir)"
                )
            (dst / task).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / task / split)
    return list(tasks)


def copy_code(dst: Path) -> None:
    """Every *.py of the code packages, subpackages included (analysis/finetune/, gatecore/hessian/, ...)."""
    for d in CODE_DIRS:
        for f in sorted((ROOT / d).rglob("*.py")):
            target = dst / f.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)


def build(out: Path, model_dir: Path, glue: Path, tasks=GLUE_TASKS, wheels=(), max_mb: float = MAX_MB) -> dict:
    """Write the bundle into `out` (emptied first) and return its manifest."""
    out = Path(out)
    if out.exists():
        if not (out / "manifest.json").is_file() and any(out.iterdir()):
            raise FileExistsError(f"{out} exists, is not empty and is not a bundle; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model = write_half_model(Path(model_dir), out / "model")
    copy_glue(Path(glue), out / "glue", tasks)
    copy_code(out)
    for w in wheels:
        (out / "wheels").mkdir(exist_ok=True)
        shutil.copy2(w, out / "wheels" / Path(w).name)
    files = sorted(p for p in out.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    size = sum(p.stat().st_size for p in files)
    if size > max_mb * 2**20:
        raise RuntimeError(
            f"bundle is {size / 2**20:.1f} MiB, over the {max_mb} MiB limit; "
            f"largest files: {sorted(files, key=lambda p: -p.stat().st_size)[:3]}"
        )
    import importlib

    manifest = {
        **provenance(
            {"model": str(model_dir), "glue": str(glue), "tasks": list(tasks), "wheels": [Path(w).name for w in wheels]}
        ),
        "model": model,
        "tasks": list(tasks),
        "size_mb": round(size / 2**20, 2),
        "modules_here": {m: getattr(importlib.import_module(m), "__version__", "?") for m in HOST_MODULES},
        "files": {str(p.relative_to(out)): sha256(p) for p in files},
    }
    write_json(out / "manifest.json", manifest)
    return manifest


def run(cfg: BundleConfig) -> dict:
    """The bundle of `cfg` (the model and GLUE folders resolved as the runs resolve them); returns its manifest."""
    import gatecore

    model_dir = Path(gatecore.resolve_model(cfg.model))
    return build(cfg.out, model_dir, glue_dir(cfg.glue_dir), cfg.tasks, cfg.wheel, cfg.max_mb)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap, BundleConfig, items={"wheel": Path})
    return ap


def main(argv=None) -> int:
    cfg = from_args(BundleConfig, build_parser().parse_args(argv))
    manifest = run(cfg)
    print(
        f"bundle {cfg.out}: {manifest['size_mb']} MiB, {len(manifest['files'])} files, model "
        f"{manifest['model']['parameters']:,} parameters stored as float16, tasks {', '.join(manifest['tasks'])}"
    )
    print(
        f"on the host:  cd {cfg.out.name} && python -m analysis.finetune.gpu_protocol --bundle . --out results_gpu --workers 12"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
