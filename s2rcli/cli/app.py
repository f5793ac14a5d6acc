"""The ``s2r`` command: a root Typer app, global options and the error boundary.

Every command module is a thin wrapper over an importable function. Errors a
user can fix are :class:`~s2rcli.errors.S2RError`: printed on one line, exit 1,
traceback only with ``--verbose``.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.exceptions import TyperException
from typer.models import DefaultPlaceholder

from .. import __version__
from ..console import console, settings
from ..errors import NotYetAvailable, S2RError, from_exception
from . import evaluate, fid, models, prepare, sait_rounds, train, translate


def _fail(ctx: typer.Context, message: str, code: int) -> None:
    if settings.verbose:
        console.print(traceback.format_exc(), markup=False, highlight=False, soft_wrap=True)
    # soft_wrap: the line is never broken at the terminal width, so an error stays one line
    console.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True, markup=True, highlight=False)
    ctx.exit(code)


# --- help: metavars instead of Python type names ----------------------------------------------

_TYPE_METAVARS = {"int": "N", "float": "FLOAT", "str": "TEXT", "bool": "BOOL"}


class _Option(TyperOption):
    """An option whose help shows a metavar (``PATH``, ``N``), and nothing for a flag."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return self.metavar
        label = (super().display_type_rich(ctx) or "").strip("<>.")
        if label.startswith("list[") and label.endswith("]"):
            label = label[5:-1]
        if "|" in label:  # choices: show them
            return label
        bare = label.split(" ")[0]  # "int range" -> int
        if bare.lower() in ("path", "file", "directory", "dir"):
            return "PATH"
        return _TYPE_METAVARS.get(bare, bare.upper() or None)


class _Argument(TyperArgument):
    """An argument shown by its metavar (``SPEC``, default: its name in capitals), without a type name."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else self.name.upper()

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def _polish(params: list) -> list:
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _Option
        elif type(param) is TyperArgument:
            param.__class__ = _Argument
    return params


def _given_values(ctx: typer.Context) -> dict[str, Any]:
    """``{"--out": "runs/a", "SPEC": "demo:demo", ...}``: what the user gave each parameter."""
    values: dict[str, Any] = {}
    for param in ctx.command.params:
        if param.name not in ctx.params:
            continue
        if isinstance(param, TyperOption):
            longs = [o for o in param.opts if o.startswith("--")]
            label = (longs or param.opts)[0]
        else:
            label = param.metavar or param.name.upper()
        values[label] = ctx.params[param.name]
    return values


class S2RCommand(TyperCommand):
    """Every ``s2r`` command: metavars in its help; common user-caused exceptions become S2RErrors
    that name the option whose file or value failed."""

    def get_params(self, ctx: typer.Context) -> list:
        return _polish(super().get_params(ctx))

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (S2RError, TyperException, typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            error = from_exception(exc, _given_values(ctx), ctx.command_path)
            if error is None:
                raise
            raise error from exc


class S2RGroup(TyperGroup):
    """Every ``s2r`` command group: metavars in its help."""

    def get_params(self, ctx: typer.Context) -> list:
        return _polish(super().get_params(ctx))


class ErrorBoundary(S2RGroup):
    """Turns library errors into one line and an exit code, for every subcommand."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # usage errors, --help, explicit exits
            raise
        except NotYetAvailable as exc:
            _fail(ctx, rich_escape(exc.one_line()), NotYetAvailable.exit_code)
        except S2RError as exc:
            _fail(ctx, rich_escape(exc.one_line()), 1)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted (Ctrl-C); files written completely so far are kept", 130)
        except Exception as exc:  # a bug or an unforeseen input: still one line unless --verbose
            error = from_exception(exc)
            if error is not None:
                _fail(ctx, rich_escape(error.one_line()), 1)
            text = " ".join(str(exc).split()) or "(no message)"
            _fail(ctx, rich_escape(f"unexpected {type(exc).__name__}: {text} (this may be a bug in s2r: "
                                   "run again with --verbose and report the traceback)"), 1)


def rich_escape(text: str) -> str:

    return escape(text)


def _unset(cls: Any) -> bool:
    return cls is None or cls is TyperGroup or (isinstance(cls, DefaultPlaceholder) and cls.value in (None, TyperGroup))


def _use_s2r_classes(typer_app: typer.Typer) -> None:
    """Every command and group registered under ``typer_app`` gets the s2r classes (unless it names its own)."""
    for info in typer_app.registered_commands:
        if info.cls in (None, TyperCommand):  # Typer fills in its own class when none is named
            info.cls = S2RCommand
    for group in typer_app.registered_groups:
        own = group.typer_instance.info.cls if group.typer_instance is not None else None
        if _unset(group.cls) and _unset(own):
            group.cls = S2RGroup
        if group.typer_instance is not None:
            _use_s2r_classes(group.typer_instance)


app = typer.Typer(
    name="s2r",
    cls=ErrorBoundary,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="s2r: turn simulator data into realistic training data for driving perception.",
    epilog="Example: s2r prepare demo --out demo && s2r train unit --preset tiny --synthetic demo:demo?split=synthetic "
    "--real demo:demo?split=real --out runs/unit",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"s2r {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and debug detail."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or info messages."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    settings.verbose, settings.quiet, settings.device = verbose, quiet, device


def _register_commands() -> None:
    for module in (prepare, train, translate, evaluate, sait_rounds, fid, models):
        module.register(app)


_register_commands()
_use_s2r_classes(app)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="s2r")


if __name__ == "__main__":  # python -m s2rcli.cli.app
    sys.exit(main())
