"""lnfree's job runner: start, watch, cancel, resume and delete training runs.

Each run is a directory ROOT/NAME laid out as in docs/CONTRACTS.md; all state is read back from
that directory and the process table, so it survives restarts of the app. No Streamlit here.
"""

from .control import cancel_run, delete_run
from .errors import (
    InvalidRunName,
    JobError,
    NotARunError,
    RunActiveError,
    RunExistsError,
    RunFinishedError,
    RunNotActiveError,
)
from .launch import DEFAULT_TRAINER, RunHandle, build_command, resume_run, start_run
from .runs import resolve_run_dir, run_dir_for, validate_name
from .status import DIED_REASON, STATES, RunStatus, list_runs, run_status

# The run directory's metrics, read through its one owner (lnfree_core.rundir).
from lnfree_core.rundir import merge_resumed, read_metrics  # noqa: E402

__all__ = [
    "DEFAULT_TRAINER", "DIED_REASON", "STATES", "InvalidRunName", "JobError", "NotARunError", "RunActiveError",
    "RunExistsError", "RunFinishedError", "RunHandle", "RunNotActiveError", "RunStatus", "build_command",
    "cancel_run", "delete_run", "list_runs", "merge_resumed", "read_metrics", "resolve_run_dir", "resume_run",
    "run_dir_for", "run_status", "start_run", "validate_name",
]
