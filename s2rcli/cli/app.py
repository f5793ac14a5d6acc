"""The ``s2r`` command: a root Typer app, global options and the error boundary.

Every command module is a thin wrapper over an importable function. Errors a
user can fix are :class:`~s2rcli.errors.S2RError`: printed on one line, exit 1,
traceback only with ``--verbose``.
"""

from __future__ import annotations

import sys
import traceback

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from .. import __version__
from ..console import console, settings
from ..errors import NotYetAvailable, S2RError


def _fail(ctx: typer.Context, message: str, code: int) -> None:
    if settings.verbose:
        console.print(traceback.format_exc(), markup=False, highlight=False)
    console.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True, markup=True)
    ctx.exit(code)


class ErrorBoundary(TyperGroup):
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
            _fail(ctx, "interrupted", 130)
        except Exception as exc:  # a bug or an unforeseen input: still one line unless --verbose
            text = " ".join(str(exc).split())[:300]
            _fail(ctx, rich_escape(f"unexpected {type(exc).__name__}: {text} (run with --verbose for the traceback)"), 1)


def rich_escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


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
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    settings.verbose, settings.quiet, settings.device = verbose, quiet, device


def _register_commands() -> None:
    from . import evaluate, fid, models, prepare, train, translate

    for module in (prepare, train, translate, evaluate, fid, models):
        module.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="s2r")


if __name__ == "__main__":  # python -m s2rcli.cli.app
    sys.exit(main())
