"""Errors raised by the job runner; every message is meant to be shown to a user as is."""


class JobError(Exception):
    """Base class: a job operation was refused or failed (the message says why)."""


class InvalidRunName(JobError, ValueError):
    """A run name breaks the naming rules (see jobs.runs.validate_name)."""


class RunExistsError(JobError, FileExistsError):
    """The run directory already exists; run directories are never overwritten."""


class NotARunError(JobError, FileNotFoundError):
    """The directory holds no run (neither job.json nor status.json)."""


class RunActiveError(JobError):
    """The operation needs a stopped run, but its process is still alive."""


class RunNotActiveError(JobError):
    """The operation needs a live run (e.g. cancel), but the run is not running."""


class RunFinishedError(JobError):
    """The run has finished; there is nothing left to resume."""
