"""Executors: a local process pool (default) and Ray.

Local: ``workers`` processes with ``cores // workers`` threads each.  On the 2-core machines
here two 1-thread workers train more images per second than one 2-thread process, because
small convolutions scale poorly across threads (scripts/bench_sweep.py measures it).
Processes are started with 'spawn': forking a process that already runs torch threads can
deadlock.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from dataclasses import asdict

from ..errors import ConfigError
from .worker import RunSpec, execute_run


def _bar(total: int, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="sweep", unit="run", dynamic_ncols=True)


def _tick(bar, result: dict, counts: dict) -> None:
    counts[result["status"]] = counts.get(result["status"], 0) + 1
    if bar is not None:
        bar.set_postfix(done=counts.get("done", 0), skipped=counts.get("skipped", 0),
                        failed=counts.get("failed", 0), refresh=False)
        bar.update(1)


def _worker_init() -> None:
    import logging

    logging.getLogger("medtl").setLevel(logging.WARNING)


def run_local(specs: list[RunSpec], workers: int, progress: bool = True) -> list[dict]:
    results: list[dict] = []
    counts: dict = {}
    bar = _bar(len(specs), progress)
    try:
        if workers == 1:
            for spec in specs:
                r = execute_run(spec)
                results.append(r)
                _tick(bar, r, counts)
            return results
        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            futures = [pool.submit(execute_run, asdict(s)) for s in specs]
            try:
                for fut in cf.as_completed(futures):
                    r = fut.result()
                    results.append(r)
                    _tick(bar, r, counts)
            except KeyboardInterrupt:
                for f in futures:
                    f.cancel()
                raise
        return results
    finally:
        if bar is not None:
            bar.close()


def ray_map(fn, tasks: list[dict], *, address: str | None, cpus_per_task: int, gpus_per_task: float = 0.0,
            max_cpus: int | None = None, on_result=None) -> list[dict]:
    """Run ``fn(task)`` for every task as a Ray task with ``cpus_per_task`` CPUs and
    ``gpus_per_task`` GPUs (a fraction lets several tasks share one device: Ray sets each task's
    CUDA_VISIBLE_DEVICES to the GPU it assigns, which torch then sees as ``cuda:0``).  Connects to
    ``address`` (``auto`` or HOST:PORT) or starts a local Ray with ``max_cpus`` CPUs (and the GPUs
    Ray detects); ``on_result(result)`` is called as tasks finish.  Results in completion order."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'ray>=2.9'") from None
    if gpus_per_task < 0:
        raise ConfigError(f"GPUs per run must be >= 0 (got {gpus_per_task})")
    started_here = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=max_cpus, include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # ConnectionError and Ray's own errors
            raise ConfigError(f"cannot connect to Ray at {address or 'a new local instance'}: "
                              f"{' '.join(str(exc).split())[:200]}") from None
        started_here = True
    if gpus_per_task > 0 and ray.cluster_resources().get("GPU", 0) < gpus_per_task:
        if started_here:
            ray.shutdown()
        raise ConfigError(f"{gpus_per_task} GPU per run asked, but the Ray cluster has "
                          f"{ray.cluster_resources().get('GPU', 0) if ray.is_initialized() else 0} GPUs")
    remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(fn)
    results: list[dict] = []
    try:
        pending = [remote.remote(t) for t in tasks]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                r = ray.get(ref)
                results.append(r)
                if on_result is not None:
                    on_result(r)
    finally:
        if started_here:
            ray.shutdown()
    return results


def run_ray(specs: list[RunSpec], address: str | None, workers: int, progress: bool = True,
            gpus_per_run: float = 0.0) -> list[dict]:
    threads = specs[0].threads if specs else 1
    counts: dict = {}
    bar = _bar(len(specs), progress)
    try:
        return ray_map(execute_run, [asdict(s) for s in specs], address=address, cpus_per_task=threads,
                       gpus_per_task=gpus_per_run, max_cpus=workers * max(1, threads),
                       on_result=lambda r: _tick(bar, r, counts))
    finally:
        if bar is not None:
            bar.close()
