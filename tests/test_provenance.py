"""Results-file plumbing: the recorded command, atomic JSON, JSONL that survives a killed writer, dirty-tree flags."""

import json
import shutil
import subprocess
import sys
import types

import pytest

import analysis.provenance as prov
from analysis.provenance import append_jsonl, command_line, provenance, read_jsonl, write_json


def test_jsonl_survives_a_torn_line(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_jsonl(path, {"run_id": "a"})
    with open(path, "a") as f:
        f.write('{"run_id": "b", "dev')  # a writer killed mid-line
    append_jsonl(path, {"run_id": "c"})
    assert [r["run_id"] for r in read_jsonl(path)] == ["a", "c"]


def test_write_json_records_provenance(tmp_path):
    out = write_json(tmp_path / "r.json", {**provenance({"lr": 0.1}, seed=3), "value": 1.5})
    rec = json.loads(out.read_text())
    assert rec["config"] == {"lr": 0.1} and rec["seed"] == 3 and rec["value"] == 1.5
    assert rec["command"].startswith("python") and "torch" in rec["versions"]
    assert not list(tmp_path.glob(".*.tmp"))
    assert command_line(["prog.py", "--x", "a b"]).endswith("--x 'a b'")


def test_command_names_a_package_run_with_dash_m(monkeypatch):
    """`python -m analysis.finetune` runs analysis/finetune/__main__.py: recorded under the package's name, in
    the main process and in a spawned worker (whose main module has no spec; argv[0] is that file)."""
    argv = [str(prov.ROOT / "analysis" / "finetune" / "__main__.py"), "--protocol", "cpu-fair"]
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="analysis.finetune.__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert command_line(argv) == "python -m analysis.finetune --protocol cpu-fair"
    main.__spec__ = None
    assert command_line(argv) == "python -m analysis.finetune --protocol cpu-fair"
    assert command_line(["/elsewhere/run.py", "-v"]) == "python /elsewhere/run.py -v"


# ---- dirty trees: recorded loudly, warned about when written and when drawn ---------------------------------

DIRTY = {"commit": "abc123", "tree_clean": False, "dirty_files": ["gatecore/gates.py"]}


def _git(root, *args):
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_counts_tracked_code_only(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "results" / "r.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "init")
    assert prov.git_state(tmp_path)["tree_clean"] is True
    (tmp_path / "results" / "r.json").write_text('{"more": 1}\n')  # a run appending results: still clean
    (tmp_path / "new.py").write_text("untracked = True\n")  # untracked: not part of the commit's code
    state = prov.git_state(tmp_path)
    assert state["tree_clean"] is True and state["dirty_files"] == []
    assert not prov.commit_id(state).endswith("-dirty")
    (tmp_path / "a.py").write_text("x = 2\n")
    state = prov.git_state(tmp_path)
    assert state["tree_clean"] is False and state["dirty_files"] == ["a.py"]
    assert prov.commit_id(state).endswith("-dirty")
    assert prov.git_state(tmp_path / "results" / "..")["commit"] == state["commit"]


def test_outside_git_the_tree_state_is_unknown(tmp_path):
    assert prov.git_state(tmp_path) == {"commit": None, "tree_clean": None, "dirty_files": None}


def test_dirty_header_is_loud_and_writing_it_warns(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prov, "git_state", lambda root=prov.ROOT: dict(DIRTY))
    monkeypatch.setattr(prov, "_WARNED_WRITES", set())
    head = prov.provenance({"lr": 0.1})
    assert head["tree_clean"] is False and head["dirty_files"] == ["gatecore/gates.py"]
    assert head["versions"]["gatecore_commit"] == "abc123-dirty"
    write_json(tmp_path / "r.json", {**head, "value": 1})
    err = capsys.readouterr().err
    assert "warning:" in err and "r.json" in err and "uncommitted changes" in err and "gatecore/gates.py" in err
    append_jsonl(tmp_path / "runs.jsonl", head)
    append_jsonl(tmp_path / "runs.jsonl", head)
    assert capsys.readouterr().err.count("runs.jsonl") == 1  # once per file, not once per record


def test_clean_header_writes_quietly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        prov, "git_state", lambda root=prov.ROOT: {"commit": "abc", "tree_clean": True, "dirty_files": []}
    )
    head = prov.provenance({})
    assert head["tree_clean"] is True and head["versions"]["gatecore_commit"] == "abc"
    write_json(tmp_path / "r.json", head)
    assert capsys.readouterr().err == ""


def test_is_dirty_reads_old_and_new_headers():
    assert prov.is_dirty({"versions": {"gatecore_commit": "abc-dirty"}})
    assert prov.is_dirty({"versions": {"gatecore_commit": "abc"}, "tree_clean": False})
    assert not prov.is_dirty({"versions": {"gatecore_commit": "abc"}, "tree_clean": True})
    assert not prov.is_dirty({"versions": {"gatecore_commit": None}})
    assert not prov.is_dirty({"no": "header"}) and not prov.is_dirty([1])


def test_figures_warn_when_drawing_from_dirty_records(tmp_path, monkeypatch, capsys):
    """`make figures` names the results files that come from a dirty tree, and still draws them."""
    from analysis import figures

    monkeypatch.setattr(prov, "DIRTY_SOURCES", {})
    src = json.loads((prov.ROOT / "results" / "bench" / "latency_cpu_s30-40.json").read_text())
    results = tmp_path / "results"
    (results / "bench").mkdir(parents=True)
    src["versions"]["gatecore_commit"] = "0" * 40 + "-dirty"
    (results / "bench" / "latency_cpu_dirty.json").write_text(json.dumps(src))
    src["versions"]["gatecore_commit"], src["tree_clean"] = "0" * 40, True
    (results / "bench" / "latency_cpu_clean.json").write_text(json.dumps(src))
    assert figures.main(["--results", str(results), "--figures", str(tmp_path / "figs"), "--only", "bench"]) == 0
    err = capsys.readouterr().err
    assert "latency_cpu_dirty.json" in err and "latency_cpu_clean.json" not in err
    assert "1 results file(s) drawn from records written with uncommitted code changes" in err
    assert list((tmp_path / "figs").glob("*.png"))
