"""`make figures` rewrites the generated parts of docs/results.md (each block from a synthetic record of its results
file's shape) and warns about dirty records and orphan files (not a sweep's points cache)."""

import importlib
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
    from analysis.bench import runtimes

    table = runtimes.summary_table(tmp_path / "results")
    assert "| old | table |" not in text and "| ONNX Runtime | 1 | 1 (20) |" in table and table in text
    assert "kept body" in text
    assert "generated part(s) left as they were (no results or no generator): missing" in err
    assert "1 results file(s) drawn from records written with uncommitted code changes" in err
    assert "latency_cpu_dirty.json" in err
    orphan_line = next(line for line in err.splitlines() if "read by no figure or table" in line)
    assert "notes.json" in orphan_line and "runtimes_" not in orphan_line and "latency_cpu_dirty" not in orphan_line


def test_orphans_skip_a_sweeps_points_cache(tmp_path):
    """<protocol>.points.jsonl is the sweep's resume cache (analysis/finetune/runner.py points_path): no orphan."""
    (tmp_path / "finetune").mkdir()
    for name in ("p.jsonl", "p.points.jsonl"):
        (tmp_path / "finetune" / name).write_text("{}\n")
    assert [n.rsplit("/", 1)[-1] for n in figures.orphans(tmp_path, set())] == ["p.jsonl"]


def test_every_generated_part_of_the_results_doc_has_a_generator():
    names = {m.group(1) for line in figures.DOC.read_text().splitlines() if (m := doc_blocks.START.match(line))}
    assert names == set(figures.DOC_BLOCKS), names ^ set(figures.DOC_BLOCKS)


# ---- each results file's block, from a small synthetic record of that file's shape ------------------------
PROV = {"command": "python -m analysis.bench_old --steps 2", "versions": {"gatecore_commit": "a" * 40}}
PROV |= {"date": "2026-01-02T03:04:05", "tree_clean": True, "threads": 1, "device": "cpu", "cpu_count": 2}
SPLIT = {"params_removed": 0.112, "encoder_linear_removed": 0.239, "flops_removed": 0.232}
TIMING = {"device": "cpu", "batch": 1, "seq": 128, "speedup_compressed": 1.48}
TIMING |= {m: {"median_ms": ms} for m, ms in (("dense", 26.1), ("gated", 29.2), ("compressed", 17.6))}
TIMING["profile_ms"] = {
    "dense": {"aten::addmm": 18.0, "total": 22.0},
    "gated": {"aten::addmm": 17.5, "aten::mul": 0.7, "total": 23.0},
    "compressed": {"aten::addmm": 12.0, "total": 16.0},
}
SETTING = {"step_ms_median": 686, "cpu_ms_median": 455, "params": {"trainable": 62978}, "memory": {"total_mb": 106}}
CHECKS = {
    "gates_init": {"rel_diff": 0.0, "tol": 1e-5},
    "lora_merged_qv": {"rel_diff": 1.6e-6},
    "lora_merged_all7": {"rel_diff": 2.9e-6},
    "exact64_s20": {"rel_diff": 2.0e-14},
    "compressed_s20": {"rel_diff": 5.5e-5, "float32_noise": 1.9e-5, "removed_got": 0.197, "all_params_removed": 0.155},
    "round_trip_s20": {"rel_diff": 0.0},
    "generate_s20": {"token_agreement": 1.0},
    "gqa_s20": {"ok": True},
}
BLOCKS = [  # (module, function, results file, record, lines the block must hold)
    (
        "analysis.bench.batching",
        "doc_block",
        "bench/batching.json",
        {
            "config": {"batch": 32, "rounds": 3, "steps": 4},
            "tasks": {
                "SST-2": {
                    "n_train": 66349,
                    "mean_len": 13.31,
                    "padding_ratio": {"random": 3.01, "bucketed": 1.048},
                    "step_ratio_random_over_bucketed": 3.71,
                    "cpu_ratio_random_over_bucketed": 3.47,
                    "step_cpu_s": {"bucketed": 0.237},
                }
            },
        },
        ["| SST-2 | 66,349 | 13.3 | 3.01 → 1.05 | 3.71x | 3.47x | 0.24 |"],
    ),
    (
        "analysis.bench.tables",
        "refusals_block",
        "bench/cli_refusals.json",
        {
            "config": {"repeats": 3},
            "cases": {"ragged row": {"median_s": 1.768, "max_s": 1.836, "ratio_to_baseline": 0.96}},
            "worst_refusal_s": 1.836,
        },
        ["| ragged row | 1.77 | 1.84 | 0.96x |", "worst refusal 1.84 s"],
    ),
    (
        "analysis.bench.kurtosis",
        "doc_block",
        "bench/kurtosis_overhead.json",
        {
            "config": {"repeats": 5, "steps": 4, "batch": 32, "seq": 64, "threads": 1, "tau": 100.0},
            "results": {
                v: {"step_ms_median": 8120, "cpu_ms_median": 1352, "penalty_call_ms": 20.3} for v in ("plain",)
            },
            "step_time_ratio_wall": 1.017,
            "step_time_ratio_cpu": 1.068,
            "weight_spread": {
                "n_times_w_min": 0.72,
                "n_times_w_max": 1.06,
                "vectors": 72,
                "max_over_min_median": 1.09,
                "max_over_min_max": 1.44,
            },
        },
        ["| plain | 8120 | 1352 | 20.3 |", "| kurtosis / plain | 1.02x | 1.07x |  |", "0.72 to 1.06 over 72"],
    ),
    (
        "analysis.bench.sizes",
        "doc_block",
        "bench/compression_sizes.json",
        {
            "config": {"seq": 128},
            "rows": [
                {"source": "trained: a.pt", "removed_asked_got": 0.2994, "inner": SPLIT, "hidden": SPLIT},
                {"source": "trained: b.pt", "removed_asked_got": 0.3001, "inner": SPLIT, "hidden": SPLIT},
                {"source": "synthetic structured 0.2", "removed_asked_got": 0.1957, "inner": SPLIT, "hidden": SPLIT},
            ],
        },
        [
            "| trained gates-all (2 checkpoints) | 29.9-30.0% | 11.2% / 11.2% | 23.9% / 23.9% | 23.2% / 23.2% |",
            "| synthetic structured, 20% asked | 19.6% |",
        ],
    ),
    (
        "analysis.bench.tables",
        "profile_block",
        "bench/latency_cpu_profile_s40.json",
        {"config": {"profile": True}, "runs": [{"size": {"encoder_linear_removed": 0.402}, "timings": [TIMING]}]},
        [
            "40.2% of the encoder-linear weights removed, cpu, batch 1 x 128",
            "| `aten::addmm` | 18.00 | 17.50 | 12.00 | 0.67x |",
            "| `aten::mul` | – | 0.70 | – |  |",
            "| all ops | 22.00 | 23.00 | 16.00 | 0.73x |",
        ],
    ),
    (
        "analysis.bench.train_cost",
        "doc_block",
        "bench/train_cost.json",
        {
            "config": {"repeats": 5, "steps": 2},
            "settings": {"gates": "gates on all six", "lora": "LoRA on q, v"},
            "comparisons": {"usual": {"gates_setting": "gates", "lora_setting": "lora"}},
            "runs": {
                "8x64": {
                    "batch": 8,
                    "seq": 64,
                    "results": {"gates": SETTING, "lora": SETTING},
                    "ratios": {"usual": {"time": 1.47, "cpu_time": 1.37, "memory": 1.30}},
                }
            },
        },
        ["| 8 x 64 | 1.47x, 1.37x, 1.30x |", "| gates | 62,978 | 686 / 455, 106 MB |", "gates: gates on all six"],
    ),
    (
        "analysis.bench.hf_trainer",
        "doc_block",
        "bench/hf_trainer_overhead.json",
        {
            "config": {"rounds": 3, "steps": 8, "batch": 32, "seq": 64, "threads": 1},
            "median_s_per_step": {"runner": [4.15, 1.42], "trainer": [4.42, 1.47]},
            "ratio_trainer_vs_runner": {"wall": 1.066, "cpu": 1.036},
        },
        ["| study runner | 4.15 | 1.42 |", "| GateTrainer / runner | 1.07x | 1.04x |"],
    ),
    (
        "analysis.bench.model_steps",
        "doc_block",
        "bench/model_steps_big.json",
        {
            "config": {"baseline": "small", "model": "big", "batch": 32, "steps": 2, "warmup": 1, "threads": 1},
            "tasks": {
                "SST-2": {
                    "methods": {
                        "gates": {
                            "small": {"cpu_s": 0.264},
                            "big": {"cpu_s": 1.392, "tokens_per_batch": 192.0, "trainable": {"trainable": 840962}},
                            "ratio_cpu": 5.28,
                            "ratio_wall": 5.54,
                        }
                    }
                }
            },
        },
        ["| SST-2 | gates | 0.26 | 1.39 | 5.28x | 5.54x | 192 | 840,962 |"],
    ),
    (
        "analysis.bench.autocast",
        "doc_block",
        "bench/autocast_big.json",
        {
            "config": {"model": "big", "dtype": "bfloat16", "batch": 32, "steps": 2, "warmup": 1, "threads": 1},
            "tasks": {
                "MRPC": {
                    "methods": {
                        "gates": {
                            "float32_cpu_s": 4.63,
                            "autocast_cpu_s": 2.0,
                            "ratio_cpu": 2.315,
                            "tokens_per_batch": 1440.0,
                        }
                    }
                }
            },
        },
        ["| MRPC | gates | 4.63 | 2.00 | 2.31x | 1440 |", "big, batch 32, 2 timed steps per precision"],
    ),
    (
        "analysis.hessian.compare",
        "timing_block",
        "hessian/exact_timing.json",
        {
            "eigvalsh_s": {"1024": 0.061, "20000": 111.887},
            "exact_runs_s_per_product": {"SST-2_gates_v5_init_seed0": 0.124},
            "max_exact_n": 20000,
            "note": "exact at n costs n products",
        },
        ["| 20,000 | 111.89 |", "| `SST-2_gates_v5_init_seed0` | 0.124 |", "Exact at n costs n products"],
    ),
    (
        "analysis.decoder.exactness",
        "doc_block",
        "decoder/exactness.json",
        {"checks": CHECKS, "all_passed": True, "weights": "Q4_1, dequantized"},
        [
            "| gated weights removed (got) | 19.7% |",
            "| all parameters removed | 15.5% |",
            "| compressed == gated, float64 (tol 1e-10) | 2.0e-14 |",
            "| save / load round trip | 0 |",
            "on all seven: 1.6e-06 / 2.9e-06",
        ],
    ),
]


@pytest.mark.parametrize("module, function, name, record, lines", BLOCKS, ids=[b[2] for b in BLOCKS])
def test_block_renders_its_results_file(tmp_path, monkeypatch, module, function, name, record, lines):
    """The table holds the record's numbers, the source line its command (and the module's name now), and the file
    counts as read; without the file: None (the part keeps its text)."""
    monkeypatch.setattr(prov, "READ_SOURCES", set())
    render = getattr(importlib.import_module(module), function)
    assert render(tmp_path / "results") is None
    path = tmp_path / "results" / name
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**PROV, **record}))
    text = render(tmp_path / "results")
    assert all(line in text for line in lines), text
    assert "`python -m analysis.bench_old --steps 2` (`analysis.bench_old` is now `analysis." in text
    assert "commit aaaaaaaaaa, 2026-01-02." in text
    assert prov.READ_SOURCES == {str(path.resolve())}


def test_profile_block_reads_only_profiled_latency_files(tmp_path, monkeypatch):
    monkeypatch.setattr(prov, "READ_SOURCES", set())
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "latency_cpu_s30.json").write_text(json.dumps({**PROV, "config": {}, "runs": []}))
    assert importlib.import_module("analysis.bench.tables").profile_block(tmp_path) is None
    assert prov.READ_SOURCES == set()
