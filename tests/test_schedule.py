"""analysis.finetune.schedule: longest first, one writer, resumable, failures logged; 2 workers == 1 worker."""

import random
import time

from analysis.finetune import sweep
from analysis.finetune.schedule import Job, run_jobs
from analysis.provenance import read_jsonl

# what may differ between two executions of the same run: timing, memory, process, file paths
VOLATILE = {"command", "date", "train_time_s", "step_time_s", "peak_mem_mb", "checkpoint", "threads", "versions"}


def record_or_fail(name, device):
    if name == "bad":
        raise ValueError("planted failure")
    return {"run_id": name, "device": device}


def test_longest_first_resumable_and_failures_logged(tmp_path):
    out, errors = tmp_path / "r.jsonl", tmp_path / "e.jsonl"
    jobs = [Job("a", 1.0, ("a",)), Job("b", 3.0, ("b",)), Job("bad", 2.0, ("bad",)), Job("c", 3.0, ("c",))]
    failed = run_jobs(jobs, record_or_fail, out, workers=1, errors_file=errors, progress=False)
    assert failed == ["bad"] and "planted failure" in read_jsonl(errors)[0]["error"]
    assert [r["run_id"] for r in read_jsonl(out)] == ["b", "c", "a"]  # by cost, ties in the given order
    before = out.read_text()
    assert run_jobs(jobs[:2] + jobs[3:], record_or_fail, out, workers=1, progress=False) == []
    assert out.read_text() == before  # everything done: nothing rerun


def toy_folder(tmp_path):
    rng = random.Random(0)
    words = ["good", "bad", "film", "plot", "dull", "fine", "acting", "long"]
    for name, n in (("train", 96), ("dev", 40)):
        lines = ["text,label"] + [
            f"{t},{int('good' in t)}" for t in (" ".join(rng.choice(words) for _ in range(5)) for _ in range(n))
        ]
        (tmp_path / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_two_workers_write_the_same_records_as_one(tmp_path):
    data = toy_folder(tmp_path)
    recs = {}
    for w in (1, 2):
        out = tmp_path / f"w{w}.jsonl"
        sweep.main(
            [
                "--model",
                "tiny-bert",
                "--tasks",
                "csv",
                "--data",
                str(data),
                "--text-cols",
                "text",
                "--label-col",
                "label",
                "--methods",
                "gates",
                "--seeds",
                "0",
                "1",
                "--epochs",
                "2",
                "--batch-size",
                "16",
                "--max-len",
                "16",
                "--val-examples",
                "16",
                "--curve-points",
                "2",
                "--keep",
                "0.6",
                "--no-compress",
                "--out",
                str(out),
                "--checkpoint-dir",
                "",
                "--quiet",
                "--workers",
                str(w),
                "--threads",
                "1",
            ]
        )
        recs[w] = {r["run_id"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in read_jsonl(out)}
    assert len(recs[1]) == 2 and recs[1] == recs[2]  # metrics, curves, gates, corrections: all equal
    gates = [r for r in recs[2].values() if r["config"]["method"] == "gates"]
    assert all(abs(r["removed_got"] - r["removed_asked"]) <= 0.02 for r in gates)


def wait_for_later(name, flag, device):
    """'first' ends at once; 'long' ends only once 'later' (readied by 'first') has run: a wave barrier hangs it."""
    if name == "later":
        flag.touch()
    if name == "long":
        deadline = time.time() + 60
        while not flag.exists():
            if time.time() > deadline:
                raise TimeoutError("'later' never ran while 'long' was running")
            time.sleep(0.05)
    return {"run_id": name}


def test_a_run_made_ready_starts_on_the_free_worker_at_once(tmp_path):
    out, flag = tmp_path / "r.jsonl", tmp_path / "later-ran"
    jobs = [Job("long", 2.0, ("long", flag)), Job("first", 1.0, ("first", flag))]
    calls = []

    def refill():  # 'later' waits for 'first' (as a later seed waits for its first seed's grid choice)
        calls.append(1)
        done = {r["run_id"] for r in read_jsonl(out)}
        return [Job("later", 1.0, ("later", flag)), Job("first", 1.0, ("first", flag))] if "first" in done else []

    assert run_jobs(jobs, wait_for_later, out, workers=2, refill=refill, progress=False) == []
    assert [r["run_id"] for r in read_jsonl(out)] == ["first", "later", "long"]
    assert len(calls) == 3  # once per finished run; 'first', returned again, was not rerun


def test_max_runs_counts_the_jobs_refill_adds(tmp_path):
    out = tmp_path / "r.jsonl"
    chain = {"a": "b", "b": "c", "c": None}  # each run readies the next

    def refill():
        last = read_jsonl(out)[-1]["run_id"]
        return [Job(chain[last], 1.0, (chain[last],))] if chain[last] else []

    assert run_jobs([Job("a", 1.0, ("a",))], record_or_fail, out, refill=refill, max_runs=2, progress=False) == []
    assert [r["run_id"] for r in read_jsonl(out)] == ["a", "b"]
