"""The notebooks run the way Jupyter runs them, their .ipynb and .py sources agree, and Jupyter Lab serves them.

Each notebook executes top to bottom in small mode (GATECORE_SMALL=1) through analysis.notebooks (the one
way to run them) on the project's kernel "gatecore" (installed by `make setup`), with the working directory
notebooks/ and no PYTHONPATH: the imports work only because the project is installed (`pip install -e .`).
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from analysis import notebooks

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = notebooks.KERNEL


def test_project_kernel_runs_this_environment():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(KERNEL)  # raises NoSuchKernel without `make setup`
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()
    for path in NOTEBOOKS:
        assert json.loads(path.read_text())["metadata"]["kernelspec"]["name"] == KERNEL, path.name


def test_every_notebook_is_a_pair_with_the_same_cells():
    """NAME.ipynb (with outputs) and NAME.py (percent format) hold the same cells, source for source."""
    import jupytext

    assert notebooks.names() == [p.stem for p in NOTEBOOKS] and len(NOTEBOOKS) == 3
    assert "py:percent" in (ROOT / "notebooks" / "jupytext.toml").read_text()
    for path in NOTEBOOKS:
        ipynb, py = jupytext.read(path), jupytext.read(path.with_suffix(".py"))
        assert [(c.cell_type, c.source) for c in ipynb.cells] == [(c.cell_type, c.source) for c in py.cells], path.name
        assert any(c.get("outputs") for c in ipynb.cells if c.cell_type == "code"), f"{path.name}: outputs committed"
    assert not list((ROOT / "notebooks").glob("make_*.py"))  # no notebook code inside string literals


@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
def test_notebook_runs_from_notebooks_folder(name, tmp_path, monkeypatch):
    monkeypatch.setenv("GATECORE_FIGURES_DIR", str(tmp_path))  # small runs must not overwrite committed figures
    monkeypatch.setenv("MPLBACKEND", "Agg")
    before = (ROOT / "notebooks" / f"{name}.ipynb").read_bytes()
    nb = notebooks.execute(name, small=True, timeout=900)
    assert all(c.get("outputs") is not None for c in nb.cells if c.cell_type == "code")
    assert (ROOT / "notebooks" / f"{name}.ipynb").read_bytes() == before  # small mode writes nothing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_jupyter_lab_starts_and_lists_the_notebooks(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
    }
    env.pop("PYTHONPATH", None)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={ROOT / 'notebooks'}",
        "--allow-root",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = _get(f"{base}/api/status?token={token}")
                break
            except OSError:
                time.sleep(0.5)
        assert status is not None, (
            f"Jupyter Lab did not answer on port {port}: {proc.stderr.read() if proc.poll() is not None else 'still starting'}"
        )
        listed = {item["name"] for item in _get(f"{base}/api/contents?token={token}")["content"]}
        assert {p.name for p in NOTEBOOKS} <= listed and len(NOTEBOOKS) == 3
        assert KERNEL in _get(f"{base}/api/kernelspecs?token={token}")["kernelspecs"]
        with pytest.raises(urllib.error.HTTPError):  # the token is required
            _get(f"{base}/api/contents")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
