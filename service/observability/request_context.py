"""The request id of the call being handled, visible to every log line written while handling it.

A ContextVar follows the call's asyncio task (and is copied into run_in_executor threads only if
passed explicitly), so concurrent calls never see each other's id.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("seqserve_request_id", default="")
