"""Why a batcher refused or dropped a call; the servicers turn these into gRPC status codes."""

from __future__ import annotations


class QueueFullError(Exception):
    """The model's queue holds max_queue_texts already: RESOURCE_EXHAUSTED, at once."""


class BatcherClosedError(Exception):
    """The model was unloaded (or the server is stopping) before the call was queued."""


class DeadlineExpiredError(Exception):
    """The call's deadline passed while it waited; it was never run."""
