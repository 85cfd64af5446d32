"""`stdq query SERVICE [NAME] [--ra RA --dec DEC] [service options] ...`

Each service's options are generated from its QueryForm fields, so
``stdq query SERVICE --help`` shows exactly what that service takes.
"""

from __future__ import annotations

import time
from typing import Any

import click

from stdq.cli.common import exit_with, message, plain_stderr, progress_printer

COMMON_OPTION_NAMES = {"name", "ra", "dec", "background", "sync", "force", "output", "fmt"}


def _click_option(field) -> click.Option:
    kwargs: dict[str, Any] = {"help": field.help, "default": None}
    if field.type == "bool":
        return click.Option([field.option, field.name], is_flag=True, default=False, help=field.help)
    if field.type == "float":
        kwargs["type"] = click.FLOAT
    elif field.type == "int":
        kwargs["type"] = click.INT
    elif field.type == "choice":
        kwargs["type"] = click.Choice(list(field.choices))
    if field.default is not None:
        kwargs["show_default"] = True
        kwargs["default"] = field.default
    if field.metavar:
        kwargs["metavar"] = field.metavar
    return click.Option([field.option, field.name], **kwargs)


def build_command(service_name: str, cls) -> click.Command:
    """The click command of one service, its options generated from its QueryForm."""
    params: list[click.Parameter] = [
        click.Argument(["name"], required=False),
        click.Option(["--ra"], metavar="RA", help="RA: decimal degrees or sexagesimal hours."),
        click.Option(["--dec"], metavar="DEC", help="Dec: decimal degrees or sexagesimal degrees."),
    ]
    params += [_click_option(f) for f in cls.form.fields]
    params += [
        click.Option(["--background"], is_flag=True, help="Queue the job, print its id and return at once."),
        click.Option(["--sync"], is_flag=True, help="Run the job in this process, not in a worker."),
        click.Option(["--force"], is_flag=True, help="Submit even when an identical job is queued or running."),
        click.Option(["-o", "--output"], metavar="PATH|-", help="Also write the table here ('-' = stdout)."),
        click.Option(["--format", "fmt"], type=click.Choice(["csv", "ecsv", "json"]), help="Format for -o (default: from the file name, else csv)."),
    ]
    doc = f"{cls.title or service_name}. Target: NAME, or --ra and --dec."
    if cls.info_url:
        doc += f"\n\nService: {cls.info_url}"

    @click.pass_context
    def callback(ctx: click.Context, **kwargs: Any) -> None:
        state = ctx.find_root().obj
        form_values = {k: v for k, v in kwargs.items() if k not in COMMON_OPTION_NAMES}
        run_query(state, service_name, cls, form_values, **{k: kwargs[k] for k in COMMON_OPTION_NAMES})

    return click.Command(service_name, params=params, callback=callback, help=doc, short_help=cls.title)


class QueryGroup(click.Group):
    """`stdq query SERVICE`: one subcommand per registered service."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from stdq.errors import StdqError

        try:
            return ctx.find_root().obj.settings.service_names()
        except StdqError:
            return []

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from stdq import plugins
        from stdq.errors import ConfigError

        state = ctx.find_root().obj
        settings = state.settings
        if name not in settings.service_names():
            return None
        config = settings.service(name)
        try:
            cls = plugins.load_class(config.class_path, where=f"[services.{name}] class")
        except ConfigError:
            raise
        return build_command(name, cls)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the services; one that cannot be loaded is shown with its error."""
        from stdq.errors import StdqError

        rows = []
        for name in self.list_commands(ctx):
            try:
                cmd = self.get_command(ctx, name)
                rows.append((name, cmd.get_short_help_str(limit=60) if cmd else ""))
            except StdqError as exc:
                rows.append((name, f"(unavailable: {exc.message})"))
        if rows:
            with formatter.section("Services"):
                formatter.write_dl(rows)

    def resolve_command(self, ctx, args):
        cmd_name = args[0] if args else None
        cmd = self.get_command(ctx, cmd_name) if cmd_name else None
        if cmd_name and cmd is None and not cmd_name.startswith("-"):
            known = ", ".join(self.list_commands(ctx))
            raise click.UsageError(f"unknown service {cmd_name!r} (known: {known})", ctx)
        return super().resolve_command(ctx, args)


@click.group(cls=QueryGroup, short_help="Query a service for one target's photometry.")
def query() -> None:
    """Query SERVICE for one target: NAME, or --ra and --dec.

    `stdq query SERVICE --help` lists that service's own options;
    `stdq services list` lists the services.
    """


def run_query(
    state,
    service_name: str,
    cls,
    form_values: dict[str, Any],
    *,
    name: str | None,
    ra: str | None,
    dec: str | None,
    background: bool,
    sync: bool,
    force: bool,
    output: str | None,
    fmt: str | None,
) -> None:
    from stdq import api
    from stdq.errors import BadInput

    if background and output:
        raise BadInput("--background returns at once, so -o has nothing to write yet",
                       hint="collect the table later: stdq jobs result ID -o PATH")
    if background and sync:
        raise BadInput("--background and --sync exclude each other")
    session = state.session
    settings = session.settings
    prepared = api.prepare_query(session, service_name, name, ra, dec, form_values, warn=message)
    immediate = settings.tasks.backend == "immediate"
    if background and immediate:
        raise BadInput(
            '[tasks] backend = "immediate" runs queries in the calling process; '
            "--background needs backend \"database\""
        )
    use_worker = background or (cls.supports_async and not sync and not immediate)
    runner = "worker" if use_worker else "inprocess"
    job, created = api.submit(session, prepared, runner=runner, force=force)
    if not created:
        message(
            f"job {job['id']} with the same service, target and options is already {job['state']};"
            " using it (--force submits a new one)"
        )
    if background:
        _ensure_worker(settings)
        if state.json:
            from stdq.cli.common import emit_json

            emit_json({"job_id": job["id"], "state": job["state"]})
        else:
            click.echo(job["id"])
        return
    if job["runner"] == "worker":
        _ensure_worker(settings)
        job = follow_job(state, job["id"])
    else:
        # Run it here; an identical in-process job whose process died (lease expired)
        # is taken over and resumed from its checkpoint; one that is alive is followed.
        try:
            job = api.run_inprocess(session, job["id"], on_progress=progress_printer())
        except BadInput:
            job = follow_job(state, job["id"])
        except KeyboardInterrupt:
            from stdq.errors import Interrupted

            raise Interrupted(
                f"interrupted job {job['id']}", hint=f"resume it: stdq jobs retry {job['id']}"
            ) from None
    from stdq.cli.render import finish_job_output

    if job["state"] != "succeeded":
        _report_failure(job)
    exit_with(finish_job_output(state, job, output, fmt))


def _report_failure(job: dict[str, Any]) -> None:
    from stdq.errors import StdqError

    err = StdqError(job.get("error") or f"job {job['id']} {job['state']}")
    err.exit_code = job.get("exit_code") or 1
    if job["state"] == "cancelled":
        err = StdqError(f"job {job['id']} was cancelled")
        err.exit_code = 1
    raise err


def _ensure_worker(settings) -> None:
    """Start a detached burst worker when a job waits and none is alive (never fails)."""
    if not settings.tasks.autostart_worker:
        return
    from stdq.jobs import worker

    try:
        worker.ensure_worker(settings)
    except Exception as exc:  # the job is queued: say so, do not lose its id
        message(f"warning: could not start a worker ({exc}); run one: stdq jobs worker")


def follow_job(state, job_id: int, *, timeout: float | None = None) -> dict[str, Any]:
    """Wait for a worker job to end, showing its progress; Ctrl-C detaches (exit 130).

    On a terminal a one-line live display shows the state, the service's progress
    (e.g. the remote queue position) and the time spent; elsewhere progress lines
    go to stderr only with --verbose. A worker is started again when the job
    becomes due and none is alive (a job queued again with backoff).
    """
    from stdq.errors import Interrupted, StdqError
    from stdq.jobs.queue import FINAL_STATES, is_abandoned, live_workers

    queue = state.session.queue
    started = time.monotonic()
    live = None
    last_text = None
    next_spawn_check = time.monotonic() + 2.0
    told_no_worker = False
    pause = 0.1
    try:
        if not plain_stderr():
            from rich.live import Live
            from rich.text import Text

            from stdq.cli.common import console

            live = Live(Text(""), console=console(stderr=True), transient=True)
            live.start()
        while True:
            job = queue.require(job_id)
            if job["state"] in FINAL_STATES:
                return job
            if job["runner"] == "inprocess" and is_abandoned(job):
                raise StdqError(
                    f"job {job_id} was being run by a process that stopped",
                    hint=f"resume it: stdq jobs retry {job_id}",
                )
            spent = int(time.monotonic() - started)
            what = job.get("progress") or ("waiting for a worker" if job["state"] == "queued" else "")
            if job["state"] == "queued" and job.get("error"):
                what = f"queued again after: {job['error']}"
            text = f"job {job_id} {job['state']}: {what} ({spent // 60}:{spent % 60:02d})"
            if live is not None:
                from rich.text import Text

                live.update(Text(text))
            elif state.verbose and what != last_text:
                message(text)
            last_text = what
            if timeout is not None and spent > timeout:
                return job
            if job["state"] == "queued" and time.monotonic() >= next_spawn_check:
                _ensure_worker(state.settings)
                next_spawn_check = time.monotonic() + 2.0
                if not told_no_worker and not state.settings.tasks.autostart_worker and not (
                    live_workers(queue.conn, state.settings.tasks.lease_seconds)
                ):
                    told_no_worker = True
                    message(
                        f"job {job_id} waits for a worker and none is running ([tasks]"
                        " autostart_worker = false): start one with `stdq jobs worker`"
                    )
            time.sleep(pause)
            pause = min(0.5, pause * 1.5)
    except KeyboardInterrupt:
        if live is not None:
            live.stop()
            live = None
        raise Interrupted(
            f"detached from job {job_id}; it goes on",
            hint=f"follow it: stdq jobs logs {job_id} -f; collect it: "
            f"stdq jobs wait {job_id} && stdq jobs result {job_id}",
        ) from None
    finally:
        if live is not None:
            live.stop()
