"""`stdq doctor`: the settings, the data directory, credentials, and one cheap request per
service and resolver (``Stdq.doctor()``), one line per check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from stdq.cli.common import emit_json, exit_with, get_state, json_option, message

if TYPE_CHECKING:
    from stdq.records import Check

LABELS = {
    "settings": "settings", "data_dir": "data dir", "credentials": "credentials",
    "service": "service", "resolver": "resolver",
}


def check_line(check: Check) -> str:
    """``ok      service      atlas: HTTP 200, the task list (JSON, 0 tasks) (0.04 s)``."""
    took = f" ({check.seconds:.2f} s)" if check.seconds is not None else ""
    status = "FAILED" if check.failed else check.status
    return f"{status:<8}{LABELS.get(check.kind, check.kind):<13}{check.name}: {check.message}{took}"


def verdict(checks: Sequence[Check], code: int) -> str:
    from stdq.records import counted

    failed = [c for c in checks if c.failed]
    if not failed:
        return f"all is well ({counted(len(checks), 'check')})"
    why = "configuration" if code == 3 else "a service or resolver cannot be used now"
    return f"{counted(len(failed), 'check')} of {len(checks)} failed: exit {code} ({why})"


@click.command(short_help="Check settings, data directory, credentials and services.")
@json_option
def doctor() -> None:
    """Check the settings, the data directory, credentials and the services.

    One line per check: the settings file (found, parses), the data directory
    (writable, schema version), each configured service's credentials (present;
    never shown), and one cheap request per service and name resolver (reachable,
    answers in its own format). Nothing is written.

    Exit codes: 0 all is well, 3 a configuration problem (settings, data
    directory, credentials missing or refused), 75 a service or resolver cannot
    be reached or does not answer in its format.
    """
    from stdq.errors import StdqError
    from stdq.records import doctor_exit_code

    state = get_state()
    try:
        sdq = state.stdq
    except StdqError as exc:  # the settings file itself: nothing else can be checked
        from stdq.config import config_path
        from stdq.doctor import settings_failure

        checks = [settings_failure(config_path(state.config), exc)]
    else:
        checks = sdq.doctor()
    code = doctor_exit_code(checks)
    if state.json:
        emit_json({"ok": code == 0, "exit_code": code, "checks": [c.to_json() for c in checks]})
    else:
        for check in checks:
            click.echo(check_line(check))
    message(verdict(checks, code))
    exit_with(code)
