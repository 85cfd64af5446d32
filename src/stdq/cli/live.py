"""The wait display: what a foreground query, `jobs wait`, `jobs cancel --wait` or
`jobs logs -f` is waiting for, so that a wait never looks like a hang.

On a terminal (and without NO_COLOR) one live line on stderr, redrawn four times a
second, shows the job's progress (a retry: "atlas: HTTP 503 at URL; retry 2/4"),
the seconds left of the wait it announced (``wait_until``) and the time spent.
Piped, a line is printed when the text changes, and only with ``--verbose``.
The display never polls anything itself: the one poll loop (``Stdq.wait``) and
the in-process runner feed it through ``jobs()`` and ``progress()``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from stdq.cli.common import message, plain_stderr

if TYPE_CHECKING:
    from stdq.records import Job


def clock_text(seconds: float) -> str:
    """Elapsed time as M:SS (H:MM:SS past an hour)."""
    s = max(0, int(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def seconds_left(wait_until: float | None, now: float) -> str:
    """' (3 s left)' while a announced wait runs, else ''."""
    if wait_until is None or wait_until <= now:
        return ""
    return f" ({int(wait_until - now + 0.999)} s left)"


def job_doing(job: Job, now: float) -> tuple[str, float | None]:
    """What one unfinished job is doing, and until when it waits (unix time) if it said so."""
    state = str(job.state)
    if state == "queued":
        run_after = job.run_after or 0.0
        if job.error:
            return f"queued again after: {job.error}", run_after if run_after > now else None
        if run_after > now:
            return "queued, due later", run_after
        return "waiting for a worker", None
    if job.cancel_requested:
        return "cancelling", None
    return job.progress or "running", job.wait_until


def jobs_text(jobs: Sequence[Job], now: float) -> tuple[str, float | None]:
    """The live line's text (without the clock) for the jobs a wait is waiting for."""
    pending = [j for j in jobs if not j.final]
    if not pending:
        return "done", None
    if len(pending) == 1:
        job = pending[0]
        doing, until = job_doing(job, now)
        return f"job {job.id} {job.state}: {doing}", until
    counts: dict[str, int] = {}
    for job in pending:
        counts[str(job.state)] = counts.get(str(job.state), 0) + 1
    text = f"waiting for {len(pending)} of {len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    return text, None


class WaitDisplay:
    """The live line of one wait (a context manager); feed it with jobs() or progress()."""

    def __init__(
        self,
        verbose: bool = False,
        *,
        live: bool | None = None,
        say: Callable[[str], None] = message,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verbose = verbose
        self.live_wanted = (not plain_stderr()) if live is None else live
        self.say = say
        self.clock = clock
        self.started = clock()
        self.text = ""
        self.wait_until: float | None = None
        self._said: str | None = None
        self._live: Any = None

    # -- feeding -------------------------------------------------------------------------
    def progress(self, text: str, wait_until: float | None = None, *_: Any, **__: Any) -> None:
        """The in-process runner's callback: the service's progress text (and its wait)."""
        self._set(text, wait_until)

    def jobs(self, jobs: Sequence[Job]) -> None:
        """The poll loop's callback: the current state of the jobs waited for."""
        if all(job.final for job in jobs):
            return  # the wait is over: its callers say how the jobs ended
        text, until = jobs_text(jobs, self.clock())
        self._set(text, until)

    def _set(self, text: str, wait_until: float | None) -> None:
        self.text, self.wait_until = text, wait_until
        if self._live is None and self.verbose and text != self._said:
            self._said = text
            self.say(text + seconds_left(wait_until, self.clock()))
        elif self._live is not None:
            self._live.refresh()

    def message(self, text: str) -> None:
        """A line for the user on stderr, printed above the live line while it is drawn."""
        if self._live is not None:
            from rich.text import Text

            self._live.console.print(Text(text))
        else:
            self.say(text)

    def echo(self, text: str) -> None:
        """A result line for stdout; above the live line when stdout is that terminal too."""
        import sys

        import click

        if self._live is not None and sys.stdout.isatty():
            from rich.text import Text

            self._live.console.print(Text(text))
        else:
            click.echo(text)

    # -- drawing -------------------------------------------------------------------------
    def line(self, now: float | None = None) -> str:
        """The live line now: text, seconds left of the announced wait, time spent."""
        now = self.clock() if now is None else now
        text = self.text or "starting"
        return f"{text}{seconds_left(self.wait_until, now)} · {clock_text(now - self.started)}"

    def __rich__(self) -> Any:
        from rich.text import Text

        return Text(self.line(), no_wrap=True, overflow="ellipsis")

    def __enter__(self) -> WaitDisplay:
        if self.live_wanted:
            from rich.live import Live

            from stdq.cli.common import console

            # stdout is never redirected: results stay on stdout, wherever it goes
            self._live = Live(
                self, console=console(stderr=True), transient=True, refresh_per_second=4,
                redirect_stdout=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()


@contextlib.contextmanager
def wait_display(state: Any) -> Iterator[WaitDisplay]:
    """The live line of one wait of STATE's Stdq; what the library has to say meanwhile
    (``Stdq.notice``: no worker runs, a worker could not start) is printed above it."""
    sdq = state.stdq
    saved = sdq.notice
    with WaitDisplay(state.verbose) as display:
        sdq.notice = display.message
        try:
            yield display
        finally:
            sdq.notice = saved
