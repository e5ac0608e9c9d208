"""One scheduler for every sweep (the finetuning sweep on the CPU, the GPU protocol driver on a GPU host).

    run_jobs(jobs, fn, out_file, workers=2, threads=1, device="cpu")

Contract:
- a job is (run_id, cost, args); `fn(*args, device)` runs it and returns its record (a dict with the
  same run_id). `fn` must be a module-level function (worker processes are spawned and import it);
- jobs whose run_id is already in `out_file` are skipped (resumable), unless marked `replace` (their record
  replaces the line of that run_id, atomically); the rest start longest
  (largest cost) first, ties in the given order, so the tail of a sweep is short runs;
- `workers` = 1 runs them here, in this process; more run them in that many spawned processes (CUDA
  cannot be forked) with `threads` torch threads each;
- this process is the one writer of `out_file`: one line per finished run, so a killed sweep loses at
  most the runs in flight and a rerun does only what is missing;
- a run that raises an Exception is logged to `errors_file` (and printed) and the sweep goes on; the
  failed run_ids are returned, and a rerun retries them. KeyboardInterrupt stops the sweep.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
import traceback
from pathlib import Path
from typing import Callable, NamedTuple

from tqdm.auto import tqdm

from analysis.provenance import append_jsonl, read_jsonl, replace_jsonl


class Job(NamedTuple):
    run_id: str
    cost: float  # anything proportional to the run's time (e.g. training steps)
    args: tuple  # fn(*args, device) -> record
    replace: bool = False  # the run is in out_file already and its new record replaces that line (a grid extended)


def _call(fn, job: Job, device) -> tuple:
    try:
        return job.run_id, fn(*job.args, device), None
    except Exception as e:  # one failed run must not stop the sweep; it is logged and redone on rerun
        return job.run_id, None, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}"


def _worker(fn, jobs, results, device, threads: int) -> None:
    """Run jobs from the queue until a None arrives; send back (run_id, record or None, error or None)."""
    import torch

    torch.set_num_threads(threads)
    while (job := jobs.get()) is not None:
        results.put(_call(fn, Job(*job), device))


def _in_process(fn, todo, device):
    for job in todo:
        yield _call(fn, job, device)


def _in_workers(fn, todo, device, workers: int, threads: int):
    ctx = mp.get_context("spawn")
    jobs, results = ctx.Queue(), ctx.Queue()
    for job in todo:
        jobs.put(tuple(job))
    procs = [
        ctx.Process(target=_worker, args=(fn, jobs, results, device, threads), daemon=True) for _ in range(workers)
    ]
    for _ in procs:
        jobs.put(None)
    for w in procs:
        w.start()
    try:
        for _ in todo:
            while True:
                try:
                    yield results.get(timeout=10)
                    break
                except queue.Empty:
                    if not any(w.is_alive() for w in procs):
                        raise RuntimeError("every worker has exited with runs left; see their errors above") from None
        for w in procs:
            w.join(timeout=60)
    finally:
        for w in procs:  # on an interrupt: the runs in flight are lost, nothing else
            if w.is_alive():
                w.terminate()


def run_jobs(
    jobs: list[Job],
    fn: Callable,
    out_file,
    workers: int = 1,
    threads: int = 1,
    device="cpu",
    errors_file=None,
    annotate: Callable[[dict], None] | None = None,
    progress: bool = True,
    max_runs: int | None = None,
) -> list[str]:
    """Run what `out_file` lacks, longest first; returns the run_ids that failed. See the module docstring."""
    out_file = Path(out_file)
    done = {r.get("run_id") for r in read_jsonl(out_file)}
    todo = sorted((j for j in jobs if j.replace or j.run_id not in done), key=lambda j: -j.cost)[:max_runs]
    replacing = {j.run_id for j in todo if j.replace}
    if not todo:
        return []
    n = max(1, min(workers, len(todo)))
    stream = _in_process(fn, todo, device) if n == 1 else _in_workers(fn, todo, device, n, threads)
    cost = {j.run_id: j.cost for j in todo}
    total, done_cost, failed, t0 = sum(cost.values()), 0.0, [], time.perf_counter()
    with tqdm(total=len(todo), desc=f"runs ({n} worker{'s' * (n > 1)})", disable=not progress) as bar:
        for rid, rec, err in stream:
            if err is not None:
                failed.append(rid)
                print(f"run {rid} failed: {err}")
                if errors_file:
                    append_jsonl(errors_file, {"run_id": rid, "error": err, "date": time.strftime("%Y-%m-%dT%H:%M:%S")})
            else:
                if annotate:
                    annotate(rec)
                (replace_jsonl if rid in replacing else append_jsonl)(out_file, rec)
            done_cost += cost[rid]
            elapsed = time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(
                errors=len(failed),
                elapsed=f"{elapsed:.0f}s",
                eta=f"{elapsed * (total / max(done_cost, 1e-9) - 1):.0f}s",
            )  # by cost done, longest first
    return failed
