"""One scheduler for every sweep (the finetuning sweep on the CPU, the GPU protocol driver on a GPU host).

    run_jobs(jobs, fn, out_file, workers=2, threads=1, device="cpu", refill=None)

Contract:
- a job is (run_id, cost, args); `fn(*args, device)` runs it and returns its record (a dict with the
  same run_id). `fn` must be a module-level function (worker processes are spawned and import it);
- jobs whose run_id is already in `out_file` are skipped (resumable), unless marked `replace` (their record
  replaces the line of that run_id, atomically); the rest start longest
  (largest cost) first, ties in the given order, so the tail of a sweep is short runs;
- `refill` (optional) is called after each finished run and returns the jobs it may have made ready (a
  sweep's later seeds, once their first seed's grid choice is recorded): those not done, queued, running or
  failed in this call join the queue, so a free worker never waits for the other jobs of a "wave";
- at most `max_runs` jobs start in one call;
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


def _in_process(fn, take, device):
    while (job := take()) is not None:
        yield _call(fn, job, device)


def _in_workers(fn, take, device, workers: int, threads: int):
    """Hand each free worker the next job of `take` (so a job made ready by a finished one starts at once) and
    yield the results; the consumer handles each (and may queue more jobs) before the next job is handed out.
    Workers start when there is a job for them, up to `workers`."""
    ctx = mp.get_context("spawn")
    jobs, results = ctx.Queue(), ctx.Queue()
    procs, busy = [], 0
    try:
        while True:
            while busy < workers and (job := take()) is not None:
                if busy == len(procs):  # every started worker is busy: start one more (none waits idle)
                    procs.append(ctx.Process(target=_worker, args=(fn, jobs, results, device, threads), daemon=True))
                    procs[-1].start()
                jobs.put(tuple(job))
                busy += 1
            if not busy:
                break
            while True:
                try:
                    result = results.get(timeout=10)
                    break
                except queue.Empty:
                    if not any(w.is_alive() for w in procs):
                        raise RuntimeError("every worker has exited with runs left; see their errors above") from None
            busy -= 1
            yield result
        for _ in procs:
            jobs.put(None)
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
    refill: Callable[[], list[Job]] | None = None,
) -> list[str]:
    """Run what `out_file` lacks, longest first; returns the run_ids that failed. See the module docstring."""
    out_file = Path(out_file)
    pending: list[Job] = []
    running: dict[str, Job] = {}
    failed: list[str] = []
    started = 0

    def add(new: list[Job]) -> None:  # queue the jobs not done, queued, running or failed
        done = {r.get("run_id") for r in read_jsonl(out_file)}
        seen = set(running) | {j.run_id for j in pending} | set(failed)
        fresh = []
        for j in new:
            if j.run_id not in seen and (j.replace or j.run_id not in done):
                fresh.append(j)
                seen.add(j.run_id)
        pending.extend(fresh)
        pending.sort(key=lambda j: -j.cost)  # stable: ties keep the given order

    def take() -> Job | None:
        nonlocal started
        if not pending or (max_runs is not None and started >= max_runs):
            return None
        started += 1
        job = pending.pop(0)
        running[job.run_id] = job
        return job

    add(jobs)
    if not pending:
        return []

    def planned() -> int:  # runs started or to start in this call
        return min(started + len(pending), max_runs or started + len(pending))

    def cost_left() -> float:  # the runs in flight and those this call will still start
        return sum(j.cost for j in running.values()) + sum(j.cost for j in pending[: planned() - started])

    n = workers if refill else min(workers, len(pending))  # refill may queue more (workers start as jobs come)
    n = max(1, min(n, max_runs or n))
    stream = _in_process(fn, take, device) if n == 1 else _in_workers(fn, take, device, n, threads)
    done_cost, t0 = 0.0, time.perf_counter()
    with tqdm(total=planned(), desc=f"runs ({n} worker{'s' * (n > 1)})", disable=not progress) as bar:
        for rid, rec, err in stream:
            job = running.pop(rid)
            if err is not None:
                failed.append(rid)
                print(f"run {rid} failed: {err}")
                if errors_file:
                    append_jsonl(errors_file, {"run_id": rid, "error": err, "date": time.strftime("%Y-%m-%dT%H:%M:%S")})
            else:
                if annotate:
                    annotate(rec)
                (replace_jsonl if job.replace else append_jsonl)(out_file, rec)
            done_cost += job.cost
            if refill:
                add(refill())
                bar.total = planned()
            elapsed = time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(
                errors=len(failed),
                elapsed=f"{elapsed:.0f}s",
                eta=f"{elapsed * cost_left() / max(done_cost, 1e-9):.0f}s",
            )  # by cost done, longest first
    return failed
