"""medtl's command line (Typer).  Commands are thin: they parse, then call library code.

Every user-fixable problem raises :class:`medtl.errors.MedtlError`; :func:`main` prints it
as one line on stderr and exits with status 2, with no traceback.
"""
from __future__ import annotations

import sys

import typer

from ..errors import MedtlError

app = typer.Typer(
    name="medtl",
    help="Fine-tune and compare pretrained backbones on X-ray data, honestly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # imported here so that `import medtl.cli` stays light and sub-apps stay in their files
    from . import (compare_cmd, data_cmd, finetune_cmd, probe_cmd, sr_cmd, sweep_cmd,  # noqa: F401
                   track_cmd, weights_cmd)

    app.add_typer(data_cmd.app, name="data", help="Inspect datasets: check, preview.")
    app.add_typer(weights_cmd.app, name="weights", help="List and fetch pretrained weights.")
    app.add_typer(probe_cmd.app, name="probe", help="Robustness probes of a finished run.")
    app.add_typer(sr_cmd.app, name="sr", help="Learned super-resolution: train and evaluate SR models.")
    finetune_cmd.register(app)
    sweep_cmd.register(app)
    compare_cmd.register(app)
    probe_cmd.register(app)
    track_cmd.register(app)


_register()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI in-process and return the exit code (used by tests)."""
    try:
        app(args=argv, prog_name="medtl", standalone_mode=False)
    except MedtlError as exc:
        msg = " ".join(str(exc).split("\n"))
        print(f"medtl: error: {msg}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        print("medtl: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("medtl: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))
