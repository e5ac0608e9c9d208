"""Results-file plumbing: the recorded command, atomic JSON, and JSONL that survives a killed writer."""
import json

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
