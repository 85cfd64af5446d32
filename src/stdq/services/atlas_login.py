"""`stdq config atlas-login`: the ATLAS service's own command.

Registered like any plug-in command, through the ``stdq.commands`` entry point
``config.atlas-login = "stdq.services.atlas_login:atlas_login"`` (the name
``GROUP.SUB`` adds the subcommand SUB to the group GROUP). The exchange of the
username and password for a token is :func:`stdq.services.atlas.obtain_token`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from stdq.cli.common import emit_json, json_option, message, pass_state


@click.command("atlas-login")
@click.option("--username", help="Your ATLAS forced photometry account (asked for when not given).")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin (scripts)."
)
@json_option
@pass_state
def atlas_login(state: Any, username: str | None, password_stdin: bool) -> None:
    """Exchange your ATLAS username and password for an API token and store the token.

    The password is asked for without echo (never give it as an option) and is
    not stored: only the token goes into [services.atlas] api_key of the
    settings file (written with mode 0600; comments in the file are not kept).
    STDQ_ATLAS_API_KEY or ATLAS_FORCED_PHOTOMETRY_API_KEY, when set, still win.
    """
    from stdq.errors import BadInput
    from stdq.services import atlas

    if not username:
        username = click.prompt("ATLAS username", err=True).strip()
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("ATLAS password", hide_input=True, err=True)
    if not username or not password:
        raise BadInput("atlas-login needs a username and a password")
    settings = state.settings
    token = atlas.obtain_token(settings, username, password)
    atlas.save_token(settings, token)
    if state.json:
        emit_json({"path": str(settings.path), "service": "atlas", "stored": "api_key"})
    else:
        click.echo(str(settings.path))
    message(f"ATLAS token stored as [services.atlas] api_key in {settings.path} (mode 0600)")
    overriding = atlas.env_token_source()
    if overriding:
        message(f"note: ${overriding} is set and takes precedence over the stored token")
