"""What a running query gets besides target and params: :class:`QueryContext`.

Its own module (re-exported as ``stdq.services.base.QueryContext``) so that
importing a service for its options (``stdq query SERVICE --help``) does not
build this dataclass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stdq.errors import Cancelled

if TYPE_CHECKING:
    from stdq.config import ServiceConfig, Settings
    from stdq.http import Client, RetryInfo
    from stdq.store import DataProduct, Store
    from stdq.targets import Target


@dataclass
class QueryContext:
    """What a running query gets besides target and params.

    ``checkpoint`` is a small dict saved with the job: save what lets a restarted
    job resume (a remote task URL) with :meth:`save_checkpoint` *before* doing
    anything that would be costly to repeat. :meth:`sleep` waits while checking
    for cancellation; :meth:`check_cancelled` raises :class:`Cancelled`.
    """

    store: Store
    settings: Settings
    service_config: ServiceConfig
    job_id: int | None = None
    data_product_type: str = ""
    checkpoint: dict[str, Any] = field(default_factory=dict)
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None
    on_progress: Callable[..., None] | None = None  # (text, wait_until: unix time | None)
    is_cancelled: Callable[[], bool] | None = None
    on_event: Callable[[str, str], None] | None = None
    client_factory: Callable[[], Client] | None = None
    clock: Callable[[], float] = time.time  # unix time (wait_until, checkpoint times)
    # a worker's job may raise stdq.slots.Postponed (queued again, its thread freed) instead of
    # waiting in its thread for an account limit; an in-process query waits
    may_postpone: bool = False
    _client: Client | None = None

    @property
    def client(self) -> Client:
        """The job's HTTP client (created on first use, closed by the runner)."""
        if self._client is None:
            if self.client_factory is None:
                raise RuntimeError("no HTTP client for this context")
            self._client = self.client_factory()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def save_checkpoint(self, **updates: Any) -> None:
        """Merge UPDATES into the checkpoint and persist it at once."""
        self.checkpoint.update(updates)
        if self.on_checkpoint:
            self.on_checkpoint(dict(self.checkpoint))

    def progress(self, text: str, wait_until: float | None = None) -> None:
        """Show TEXT as the job's progress; WAIT_UNTIL (unix time) when it waits for that."""
        if self.on_progress:
            self.on_progress(text, wait_until)

    def event(self, kind: str, message: str) -> None:
        """Record an event in the job's history (no secrets: pass redacted text)."""
        if self.on_event:
            self.on_event(kind, message)

    def report_retry(self, retry: RetryInfo) -> None:
        """A retry of the HTTP client: a job event, and the progress line with its wait."""
        self.event("retry", retry.message)
        self.progress(retry.text, wait_until=self.clock() + retry.delay)

    def check_cancelled(self) -> None:
        if self.is_cancelled and self.is_cancelled():
            raise Cancelled("the job was cancelled")

    def sleep(self, seconds: float) -> None:
        """Wait SECONDS, waking every 0.2 s to check for cancellation."""
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            self.check_cancelled()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.2, left))

    def new_product(self, target: Target, params: dict[str, Any], *, key: str = "main") -> DataProduct:
        """The product of this job for KEY: created once, found again when the job resumes."""
        products = dict(self.checkpoint.get("products") or {})
        if key in products:
            product = self.store.load_product(int(products[key]))
            product.params = dict(params)
        else:
            product = self.store.create_product(
                service=self.service_config.name,
                data_product_type=self.data_product_type,
                target=target.as_dict(),
                params=params,
                job_id=self.job_id,
            )
            products[key] = product.id
            self.save_checkpoint(products=products)
        # a secret the server echoes back is masked in raw files and product.json
        product.secrets = tuple(self.service_config.secret_values())
        return product
