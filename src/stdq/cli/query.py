"""`stdq query SERVICE [NAME] [--ra RA --dec DEC] [service options] ...`

Each service's options are generated from its QueryForm fields, so
``stdq query SERVICE --help`` shows exactly what that service takes. The query
is a job of :class:`stdq.Stdq`: ``submit`` chooses its runner (a worker for a
service with background support, else this process); in the foreground the
command then waits for it (``Stdq.wait``) or runs it here (``Stdq.run``), with
the live line of :mod:`stdq.cli.live`, and prints ``Stdq.result``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from stdq.cli.common import exit_with, get_state, json_option, message

if TYPE_CHECKING:
    from stdq.cli import AppState
    from stdq.records import Job

COMMON_OPTION_NAMES = {"name", "ra", "dec", "background", "sync", "force", "output", "fmt"}


def _click_option(field: Any) -> click.Option:
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


def build_command(service_name: str, cls: Any) -> click.Command:
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
        click.Option(["--format", "fmt"], type=click.Choice(["csv", "ecsv", "json", "parquet"]), help="Format for -o (default: from the file name, else csv)."),
    ]
    doc = f"{cls.title or service_name}. Target: NAME, or --ra and --dec."
    if cls.info_url:
        doc += f"\n\nService: {cls.info_url}"

    def callback(**kwargs: Any) -> None:
        form_values = {k: v for k, v in kwargs.items() if k not in COMMON_OPTION_NAMES}
        run_query(get_state(), service_name, form_values, **{k: kwargs[k] for k in COMMON_OPTION_NAMES})

    command = click.Command(service_name, params=params, callback=callback, help=doc, short_help=cls.title)
    return json_option(command)


class QueryGroup(click.Group):
    """`stdq query SERVICE`: one subcommand per registered service."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from stdq.errors import StdqError

        try:
            names: list[str] = get_state(ctx).stdq.registry.service_names()
        except StdqError:
            return []
        return names

    @staticmethod
    def _registry(ctx: click.Context) -> Any:
        """The run's registry; for `--help` alone that of the settings only (no Stdq: the
        library, its records and database modules are not imported just to show options),
        and with no settings file not even the settings (:func:`stdq.registry.help_services`)."""
        state = get_state(ctx)
        if ctx.meta.get("stdq.query.help") and getattr(state, "_stdq", None) is None:
            from stdq.registry import help_services

            return help_services(state.config, state.data_dir)
        return state.stdq.registry

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        built: dict[str, click.Command] = ctx.meta.setdefault("stdq.query.commands", {})
        if name in built:  # resolve_command asks twice: the command is built once
            return built[name]
        registry = self._registry(ctx)
        if not registry.has_service(name):  # a built-in name needs no entry-point scan
            return None
        built[name] = build_command(name, registry.service_class(name))
        return built[name]

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

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        cmd_name = args[0] if args else None
        help_names = ctx.help_option_names or ["--help"]
        ctx.meta["stdq.query.help"] = any(a in help_names for a in args[1:])
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
    state: AppState,
    service_name: str,
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
    from stdq.cli import render
    from stdq.errors import BadInput

    if background and output:
        raise BadInput("--background returns at once, so -o has nothing to write yet",
                       hint="collect the table later: stdq jobs result ID -o PATH")
    if background and sync:
        raise BadInput("--background and --sync exclude each other")
    if fmt == "parquet" or (fmt is None and (output or "").lower().endswith(".parquet")):
        from stdq.photometry import require_pyarrow

        require_pyarrow("writing Parquet (--format parquet)")  # exit 3 before the query runs
    runner = "worker" if background else "inprocess" if sync else None
    job = state.stdq.submit(
        service_name, name, ra=ra, dec=dec, force=force, runner=runner, **form_values
    )
    if job.reused and job.final:
        from stdq.records import iso_time

        message(
            f"reused the result of job {job.id}: the same query succeeded at"
            f" {iso_time(job.finished_at)} ([tasks] reuse_seconds); no request sent"
            " (--force fetches again)"
        )
    elif job.reused:
        message(
            f"job {job.id} with the same service, target and options is already {job.state};"
            " using it (--force submits a new one)"
        )
    if background:
        render.submitted(job, state.json)
        return
    if job.final:
        pass  # a reused result
    elif job.runner == "worker":
        follow(state, job)
    else:
        run_here(state, job.id)
    show_result(state, job.id, output, fmt, reused=job.reused and job.final)


def follow(state: AppState, job: Job) -> Job:
    """Wait for a worker job to end, with the live line; Ctrl-C detaches (exit 130)."""
    from stdq.cli.live import wait_display
    from stdq.errors import Interrupted

    try:
        with wait_display(state) as display:
            display.jobs([job])
            (ended,) = state.stdq.wait([job.id], on_progress=display.jobs)
    except KeyboardInterrupt:
        raise Interrupted(
            f"detached from job {job.id}; it goes on",
            hint=f"follow it: stdq jobs logs {job.id} -f; collect it: "
            f"stdq jobs wait {job.id} && stdq jobs result {job.id}",
        ) from None
    return ended


def run_here(state: AppState, job_id: int) -> Job:
    """Run an in-process job in this process, the service's progress on the live line.

    An identical job that another live process runs is followed instead; Ctrl-C
    stops it (exit 130), to be resumed by ``stdq jobs retry``.
    """
    from stdq.cli.live import wait_display
    from stdq.errors import BadInput, Interrupted

    sdq = state.stdq
    job = sdq.job(job_id)
    prefix = f"{job.service}: "

    try:
        with wait_display(state) as display:

            def progress(text: str, wait_until: float | None = None, *_: Any) -> None:
                display.progress(text if text.startswith(prefix) else prefix + text, wait_until)

            progress(f"querying {job.target.label}")
            return sdq.run(job_id, on_progress=progress)
    except BadInput:
        current = sdq.job(job_id)
        if current.final or str(current.state) != "running":
            raise
        return follow(state, current)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted job {job_id}", hint=f"resume it: stdq jobs retry {job_id}") from None


def show_result(
    state: AppState, job_id: int, output: str | None, fmt: str | None, *, reused: bool = False
) -> None:
    """Print a job's result (the table to -o, the summary or JSON); a job without rows
    raises its own error (no data: exit 5, with the JSON when asked)."""
    import dataclasses

    from stdq.cli import render
    from stdq.errors import NoData

    sdq = state.stdq
    try:
        result = sdq.result(job_id)
    except NoData as exc:
        job = dataclasses.replace(sdq.job(job_id), reused=reused)
        render.no_data(job, [sdq.product(p) for p in job.products], exc.message, state.json, output)
        exit_with(exc.exit_code)
        return
    if reused:
        result.job = dataclasses.replace(result.job, reused=True)
    render.query_result(result, output, fmt, state.json)
