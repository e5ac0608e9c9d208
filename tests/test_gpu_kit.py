"""The offline GPU kit on the CPU: build a bundle, run the protocol in tiny mode from it, resume it."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_finetune import CONTRACT

from analysis.finetune import gpu_bundle, gpu_protocol
from analysis.finetune.config import expand, run_id
from analysis.provenance import read_jsonl

ROOT = Path(__file__).resolve().parent.parent


def write_rte(folder: Path, n: int) -> None:
    """An RTE-format fixture (index, sentence1, sentence2, label), with a raw quote character."""
    folder.mkdir(parents=True)
    for split, rows in (("train.tsv", n), ("dev.tsv", n // 2)):
        lines = ["index\tsentence1\tsentence2\tlabel"]
        lines += [
            f'{i}\tthe "cat" sat on mat {i} .\ta cat sat {i % 3} .\t{"entailment" if i % 2 else "not_entailment"}'
            for i in range(rows)
        ]
        (folder / split).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kit")
    write_rte(tmp / "glue" / "RTE", 60)
    import gatecore

    manifest = gpu_bundle.build(tmp / "bundle", gatecore.local_model_dir(), tmp / "glue", tasks=("RTE",))
    return tmp / "bundle", manifest


def test_bundle_contents(bundle):
    path, manifest = bundle
    assert manifest["size_mb"] < gpu_bundle.MAX_MB
    assert manifest["model"]["name"] == "all-MiniLM-L6-v2" and manifest["tasks"] == ["RTE"]
    for rel, digest in manifest["files"].items():
        assert gpu_bundle.sha256(path / rel) == digest, rel
    assert {
        "gatecore/gates.py",
        "gatecore/hessian/operator.py",
        "analysis/finetune/sweep.py",
        "analysis/finetune/gpu_protocol.py",
        "glue/RTE/train.tsv",
        "model/tokenizer.json",
    } <= set(manifest["files"])
    half = load_file(path / "model" / "model.safetensors")
    assert {v.dtype for v in half.values() if v.is_floating_point()} == {torch.float16}


def test_upcast_is_exact(bundle, tmp_path):
    path, _ = bundle
    out = gpu_protocol.upcast_model(path / "model", tmp_path / "fp32")
    half, full = load_file(path / "model" / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(half) == set(full)
    for k, v in half.items():
        want = v.float() if v.is_floating_point() else v
        assert full[k].dtype == want.dtype and torch.equal(full[k], want), k
    assert (out / "config.json").read_text() == (path / "model" / "config.json").read_text()


def test_size_limit_is_enforced(tmp_path):
    import gatecore

    write_rte(tmp_path / "glue" / "RTE", 4)
    with pytest.raises(RuntimeError, match="over the 1 MiB limit"):
        gpu_bundle.build(tmp_path / "b", gatecore.local_model_dir(), tmp_path / "glue", tasks=("RTE",), max_mb=1)
    with pytest.raises(FileNotFoundError, match="GLUE MRPC train.tsv"):
        gpu_bundle.build(tmp_path / "c", gatecore.local_model_dir(), tmp_path / "glue", tasks=("MRPC",))


def _run(bundle_dir: Path, out: Path, *extra) -> str:
    env = {**os.environ, "PYTHONPATH": str(bundle_dir), "GATECORE_SMALL": ""}
    cmd = [
        sys.executable,
        "-m",
        "analysis.finetune.gpu_protocol",
        "--bundle",
        ".",
        "--out",
        str(out),
        "--tiny",
        "--device",
        "cpu",
        "--workers",
        "2",
        *extra,
    ]
    done = subprocess.run(cmd, cwd=bundle_dir, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_tiny_protocol_runs_from_the_bundle_and_resumes(bundle, tmp_path):
    path, _ = bundle
    out = tmp_path / "results_gpu"
    log = _run(path, out)
    assert "2 runs, 0 already in" in log
    recs = read_jsonl(out / "finetune" / "gpu.jsonl")
    assert sorted(r["config"]["method"] for r in recs) == ["gates", "lora"]
    for r in recs:
        assert not [k for k in CONTRACT if k not in r]  # the record contract the sweep keeps
        assert r["config"]["model"].endswith("all-MiniLM-L6-v2") and r["config"]["task"] == "RTE"
        assert r["command"].startswith("python -m analysis.finetune.gpu_protocol")
        assert r["config"]["model"] == ".work/all-MiniLM-L6-v2" and r["gpu_protocol"]["workers"] == 2
        assert (out / "checkpoints" / f"{r['run_id']}.pt").is_file()
    gates = next(r for r in recs if r["config"]["method"] == "gates")
    assert gates["compressed"]["dev_main"] == gates["dev_main"]
    assert abs(gates["removed_got"] - gates["removed_asked"]) <= 0.02  # the sparsity contract, on the host too
    with open(out / "finetune" / "gpu.jsonl", "a") as f:
        f.write('{"run_id": "torn')  # a driver killed mid-write
    log = _run(path, out)
    assert "2 already in" in log and "0 to do" in log
    assert len(read_jsonl(out / "finetune" / "gpu.jsonl")) == 2


def test_dry_run_plans_the_full_protocol(bundle, capsys):
    path, _ = bundle
    argv = ["--bundle", str(path), "--out", str(path / "o"), "--dry-run", "--device", "cpu"]
    where, cfg = gpu_protocol.parse_args(argv)
    assert (cfg.protocol, cfg.root, cfg.tasks) == ("gpu", str(path.resolve()), ("RTE",))
    assert cfg.model == ".work/all-MiniLM-L6-v2"  # relative to the bundle: in the spec, hence in the run id
    assert gpu_protocol.run_bundle(where, cfg) == path / "o" / "finetune" / "gpu.jsonl"
    # per task: 3 seeds x (full, lora, bias, head + gates at 5 keeps + gates without bias at 1 keep)
    ids = [run_id(s) for s in expand(cfg)]
    assert len(ids) == len(set(ids)) == 3 * (4 + 5 + 1)
    assert "30 runs, 0 already in" in capsys.readouterr().out and not (path / "o").exists()


def test_run_ids_do_not_depend_on_where_the_bundle_lies(bundle, tmp_path):
    path, _ = bundle
    (tmp_path / "elsewhere").mkdir()
    shutil.copy2(path / "manifest.json", tmp_path / "elsewhere")
    here, there = (gpu_protocol.bundle_config(p, tmp_path / "o") for p in (path, tmp_path / "elsewhere"))
    assert here.root != there.root
    assert [run_id(s) for s in expand(here)] == [run_id(s) for s in expand(there)]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: --bundle, --out"),
        (["--bundle", "{tmp}", "--out", "{tmp}/o"], "--bundle .*: not a bundle \\(no manifest.json\\)"),
        (["--bundle", "{bundle}", "--out", "{tmp}/o", "--keep", "1.5"], "--keep must be a kept fraction"),
    ],
)
def test_bad_input_is_one_line(bundle, tmp_path, capsys, argv, message):
    rc = gpu_protocol.main([a.format(tmp=tmp_path, bundle=bundle[0]) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and re.match("error: " + message, err[0]), err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("module", [gpu_bundle, gpu_protocol], ids=["gpu_bundle", "gpu_protocol"])
def test_every_option_has_help(module):
    ap = module.build_parser()
    undocumented = [a.dest for a in ap._actions if not (a.help or "").strip()]
    assert not undocumented
