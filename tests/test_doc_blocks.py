"""`make figures` rewrites the generated parts of docs/results.md and warns about dirty records and orphan files."""

import json
import shutil

import pytest

from analysis import doc_blocks, figures
from analysis import provenance as prov

DOC = """# Results

Parts between `<!-- generated: NAME -->` and `<!-- end generated -->` are rewritten.

<!-- generated: table -->
| old | table |
<!-- end generated -->

prose kept as it is

<!-- generated: missing -->
kept body
<!-- end generated -->
"""


def test_fill_rewrites_only_the_marked_parts():
    new, kept = doc_blocks.fill(DOC, {"table": "| new |\n|---|\n| 1 |\n", "unused": "x"})
    assert kept == ["missing"]
    assert "| old | table |" not in new
    assert "<!-- generated: table -->\n| new |\n|---|\n| 1 |\n<!-- end generated -->" in new
    assert new.replace("| new |\n|---|\n| 1 |", "| old | table |") == DOC  # nothing else changed
    assert doc_blocks.fill(new, {"table": "| new |\n|---|\n| 1 |"})[0] == new  # idempotent


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- generated: a -->\nbody\n", "no '<!-- end generated -->' line"),
        ("body\n<!-- end generated -->\n", "without a '<!-- generated: NAME -->'"),
        ("<!-- generated: a -->\n<!-- generated: b -->\n<!-- end generated -->\n", "starts inside part 'a'"),
    ],
)
def test_fill_refuses_broken_markers(text, message):
    with pytest.raises(ValueError, match=message):
        doc_blocks.fill(text, {"a": "x"})


def test_update_writes_only_on_change(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text(DOC)
    assert doc_blocks.update(doc, {"table": "| old | table |"}) == (False, ["missing"])
    assert doc_blocks.update(doc, {"table": "| t |", "missing": "m"}) == (True, [])
    assert "| t |" in doc.read_text() and "\nm\n" in doc.read_text()


def test_dirty_warning_names_the_run_ids(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prov, "DIRTY_SOURCES", {})
    monkeypatch.setattr(prov, "READ_SOURCES", set())
    recs = [
        {"run_id": "clean-run", "tree_clean": True},
        {"run_id": "dirty-run", "tree_clean": False},
        {"run_id": "old-run", "versions": {"gatecore_commit": "abc-dirty"}},
    ]
    assert prov.warn_if_dirty(tmp_path / "runs.jsonl", recs)
    err = capsys.readouterr().err
    assert "2 of 3 record(s) (run ids: dirty-run, old-run)" in err and "clean-run" not in err
    assert str((tmp_path / "runs.jsonl").resolve()) in prov.READ_SOURCES


def test_make_figures_rewrites_the_doc_and_warns_about_dirty_records_and_orphans(tmp_path, monkeypatch, capsys):
    """A full `make figures` on a small results folder: the doc's part rewritten from the runtimes records, the dirty
    latency file named, the file nothing reads listed as an orphan, the files drawn from not."""
    monkeypatch.setattr(prov, "DIRTY_SOURCES", {})
    monkeypatch.setattr(prov, "READ_SOURCES", set())
    monkeypatch.setattr(
        figures,
        "DOC_BLOCKS",
        {
            "table": ("analysis.bench.runtimes", "summary_table", {}),
            "missing": ("analysis.finetune.figures", "glue_block", {"protocol": "cpu-converged"}),
        },
    )
    bench = tmp_path / "results" / "bench"
    bench.mkdir(parents=True)
    shutil.copy(prov.ROOT / "results" / "bench" / "runtimes_s20-30-40_t1.json", bench)
    src = json.loads((prov.ROOT / "results" / "bench" / "latency_cpu_s30-40.json").read_text())
    src["versions"]["gatecore_commit"], src["tree_clean"] = "0" * 40 + "-dirty", False
    (bench / "latency_cpu_dirty.json").write_text(json.dumps(src))
    (bench / "notes.json").write_text("{}")
    doc = tmp_path / "results.md"
    doc.write_text(DOC)
    args = ["--results", str(tmp_path / "results"), "--figures", str(tmp_path / "figs"), "--doc", str(doc)]
    assert figures.main(args) == 0
    err = capsys.readouterr().err
    text = doc.read_text()
    assert "| old | table |" not in text and "| ONNX Runtime | 1 | 1 | 1.10x |" in text and "kept body" in text
    assert "generated part(s) left as they were (no results or no generator): missing" in err
    assert "1 results file(s) drawn from records written with uncommitted code changes" in err
    assert "latency_cpu_dirty.json" in err
    orphan_line = next(line for line in err.splitlines() if "read by no figure or table" in line)
    assert "notes.json" in orphan_line and "runtimes_" not in orphan_line and "latency_cpu_dirty" not in orphan_line
