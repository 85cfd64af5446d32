"""Regenerate the ``--help`` blocks of docs/commands.md from the real CLI.

Usage (from the repository root)::

    python docs/update_reference.py           # rewrite the blocks in docs/commands.md
    python docs/update_reference.py --check   # exit 1 and name every block that differs

docs/commands.md is hand-written prose around generated blocks::

    <!-- help: stdq jobs list -->
    ```text
    ...the exact output of `stdq jobs list --help`...
    ```
    <!-- /help -->

Every command and subcommand of the click group is covered (the service
subcommands of ``stdq query`` too); commands added by third-party plugins are
not. The help is produced in-process with click's CliRunner at a fixed width
(80 columns), with no settings file and an empty data directory, so the text
does not depend on the terminal or on the user's settings. ``tests/test_docs.py``
runs the same code and fails when a block differs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

COMMANDS_MD = Path(__file__).resolve().parent / "commands.md"
SCRIPT = "python docs/update_reference.py"
WIDTH = 80
BLOCK = re.compile(
    r"<!-- help: (?P<path>[^>]*?) -->\n```text\n(?P<body>.*?)```\n<!-- /help -->\n",
    re.DOTALL,
)
MISSING_HEADING = "## Commands not yet described here"


def _builtin_only(eps: Any) -> Any:
    """Entry points of the stdq distribution itself (plugins are not documented here)."""

    def ours(ep: Any) -> bool:
        dist = getattr(ep, "dist", None)
        if dist is not None and getattr(dist, "name", None):
            return str(dist.name).lower() == "stdq"
        return str(ep.value).startswith("stdq.")

    if isinstance(eps, importlib.metadata.EntryPoints):
        return importlib.metadata.EntryPoints(ep for ep in eps if ours(ep))
    if isinstance(eps, dict):  # the old (<3.10) shape, kept for safety
        return {group: [ep for ep in group_eps if ours(ep)] for group, group_eps in eps.items()}
    return [ep for ep in eps if ours(ep)]


@contextlib.contextmanager
def _environment() -> Iterator[dict[str, str | None]]:
    """No settings file, an empty data directory, fixed width, built-in entry points only."""
    original = importlib.metadata.entry_points

    def entry_points(*args: Any, **kwargs: Any) -> Any:
        return _builtin_only(original(*args, **kwargs))

    patched: list[tuple[Any, str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stdq-docs-") as tmp:
        env: dict[str, str | None] = {
            name: None
            for name in os.environ
            if name.startswith("STDQ_") or name in ("ATLAS_FORCED_PHOTOMETRY_API_KEY", "MAST_API_TOKEN")
        }
        env.update(
            {
                "STDQ_CONFIG": str(Path(tmp) / "no-such-settings.toml"),
                "STDQ_DATA_DIR": str(Path(tmp) / "data"),
                "COLUMNS": str(WIDTH),
                "LINES": "50",
                "NO_COLOR": "1",
            }
        )
        importlib.metadata.entry_points = entry_points  # type: ignore[assignment]
        for module_name, module in list(sys.modules.items()):
            if module_name.startswith("stdq") and getattr(module, "entry_points", None) is original:
                patched.append((module, "entry_points", original))
                module.entry_points = entry_points
        for module_name in ("stdq.registry", "stdq.plugins"):
            module = sys.modules.get(module_name)
            for value in vars(module).values() if module else ():
                clear = getattr(value, "cache_clear", None)
                if callable(clear):
                    clear()
        try:
            yield env
        finally:
            importlib.metadata.entry_points = original  # type: ignore[assignment]
            for module, attr, value in patched:
                setattr(module, attr, value)
            for module_name in ("stdq.registry", "stdq.plugins"):
                module = sys.modules.get(module_name)
                for value in vars(module).values() if module else ():
                    clear = getattr(value, "cache_clear", None)
                    if callable(clear):
                        clear()


def _command_paths(env: dict[str, str | None]) -> list[list[str]]:
    """Every command path under `stdq`, depth first, in the order --help lists them."""
    import click

    from stdq.cli import cli

    saved = {name: os.environ.get(name) for name in env}
    try:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        root = cli.make_context("stdq", [], resilient_parsing=True, terminal_width=WIDTH)
        paths: list[list[str]] = []
        with root:
            if cli.callback is not None:
                root.invoke(cli.callback, **root.params)

            def walk(cmd: click.Command, ctx: click.Context, path: list[str]) -> None:
                paths.append(path)
                if not isinstance(cmd, click.Group):
                    return
                for name in cmd.list_commands(ctx):
                    sub = cmd.get_command(ctx, name)
                    if sub is None or sub.hidden:
                        continue
                    sub_ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
                    with sub_ctx:
                        walk(sub, sub_ctx, [*path, name])

            walk(cli, root, [])
        return paths
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def generate() -> dict[str, str]:
    """``{"stdq jobs list": <its --help output>, ...}`` for every built-in command."""
    from click.testing import CliRunner

    from stdq.cli import cli

    helps: dict[str, str] = {}
    with _environment() as env:
        runner = CliRunner(env=env)
        for path in _command_paths(env):
            result = runner.invoke(cli, [*path, "--help"], prog_name="stdq", terminal_width=WIDTH)
            name = " ".join(["stdq", *path])
            if result.exit_code != 0:
                raise RuntimeError(f"`{name} --help` exited {result.exit_code}: {result.output}")
            helps[name] = result.stdout
    return helps


def block(name: str, text: str) -> str:
    """The generated block of one command."""
    body = text if text.endswith("\n") else text + "\n"
    return f"<!-- help: {name} -->\n```text\n{body}```\n<!-- /help -->\n"


def blocks_in(doc: str) -> dict[str, str]:
    """``{command: help text}`` of every block in DOC."""
    return {m["path"]: m["body"] for m in BLOCK.finditer(doc)}


def problems(doc: str, helps: dict[str, str]) -> list[str]:
    """What differs between DOC's blocks and the real --help texts (empty when in step)."""
    found = blocks_in(doc)
    out: list[str] = []
    for name, text in helps.items():
        if name not in found:
            out.append(f"{name}: no help block in docs/commands.md")
        elif found[name] != (text if text.endswith("\n") else text + "\n"):
            out.append(f"{name}: the help block differs from `{name} --help`")
    for name in found:
        if name not in helps:
            out.append(f"{name}: documented, but there is no such command")
    return out


def update(doc: str, helps: dict[str, str]) -> tuple[str, list[str]]:
    """DOC with every block rewritten; new commands appended, stale blocks removed."""
    notes: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match["path"]
        if name not in helps:
            notes.append(f"removed the block of {name!r} (no such command): edit its prose")
            return ""
        return block(name, helps[name])

    new = BLOCK.sub(replace, doc)
    present = blocks_in(new)
    missing = [name for name in helps if name not in present]
    if missing:
        if MISSING_HEADING not in new:
            new = new.rstrip("\n") + f"\n\n{MISSING_HEADING}\n\n"
        for name in missing:
            notes.append(f"added {name!r} under {MISSING_HEADING!r}: move it and describe it")
            new = new.rstrip("\n") + f"\n\n### `{name}`\n\n{block(name, helps[name])}"
    return new, notes


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    doc = COMMANDS_MD.read_text(encoding="utf-8")
    helps = generate()
    if "--check" in args:
        found = problems(doc, helps)
        for line in found:
            print(line, file=sys.stderr)
        if found:
            print(f"run `{SCRIPT}` to regenerate the blocks", file=sys.stderr)
        return 1 if found else 0
    new, notes = update(doc, helps)
    for line in notes:
        print(line, file=sys.stderr)
    if new != doc:
        COMMANDS_MD.write_text(new, encoding="utf-8")
        print(f"rewrote {COMMANDS_MD} ({len(helps)} commands)", file=sys.stderr)
    else:
        print(f"{COMMANDS_MD} is up to date ({len(helps)} commands)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
