"""Many-seed studies: run every (arm, seed) of a sweep config, locally or on Ray."""
from .config import SweepConfig, load_sweep
from .runner import plan_runs, run_sweep
from .worker import RunResult, RunSpec, execute_run

__all__ = ["SweepConfig", "load_sweep", "RunResult", "RunSpec", "execute_run", "plan_runs", "run_sweep"]
