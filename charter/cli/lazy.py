"""A click group that imports a subcommand's module only when that subcommand runs.

`charter train dpo` then pays for the training modules alone, not for the service, the
suites and the workbench it never touches (about a second of CPU on a 2-core machine, which
is most of what `charter train` used to cost over a plain TRL script).
"""

from __future__ import annotations

import importlib
from typing import Any

import click


class LazyGroup(click.Group):
    """`lazy_subcommands` maps a command's name to `"module:attribute"`, imported on first use."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_subcommands:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = self.lazy_subcommands[cmd_name].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command) or command.name != cmd_name:
            raise TypeError(f"{self.lazy_subcommands[cmd_name]} is not the command {cmd_name!r}")
        return command
