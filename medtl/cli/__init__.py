"""medtl's command line (Typer).  Commands are thin: they parse, then call library code.

Every command is registered here, the same way: a top-level command is a module-level
function of its ``*_cmd`` module, a command group is the ``app`` of its module.  Tests call
the CLI through :data:`app` (Typer's ``CliRunner``) or :func:`run`.

Every user-fixable problem raises :class:`medtl.errors.MedtlError`; :func:`run` prints it as
one ``medtl: error:`` line on stderr and returns 2, with no traceback.  Usage errors (unknown
command or option, missing or malformed parameter) print click's usage message and return 2.
"""
from __future__ import annotations

import importlib
import sys
import warnings

import typer

from ..errors import MedtlError
from . import (compare_cmd, data_cmd, evaluate_cmd, export_cmd, finetune_cmd, plan_cmd, pretrain_cmd, probe_cmd,
               report_cmd, sr_cmd, study_cmd, sweep_cmd, track_cmd, weights_cmd)

app = typer.Typer(
    name="medtl",
    help="Fine-tune and compare pretrained backbones on X-ray data, honestly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

COMMANDS = {
    "finetune": finetune_cmd.finetune,
    "pretrain": pretrain_cmd.pretrain,
    "sweep": sweep_cmd.sweep,
    "compare": compare_cmd.compare,
    "plan": plan_cmd.plan,
    "evaluate": evaluate_cmd.evaluate,
    "robustness-report": report_cmd.robustness_report,
    "study": study_cmd.study,
    "track": track_cmd.track,
    "export": export_cmd.export,
}
GROUPS = {
    "data": data_cmd.app,
    "weights": weights_cmd.app,
    "probe": probe_cmd.app,
    "sr": sr_cmd.app,
}
for _name, _fn in COMMANDS.items():
    app.command(_name)(_fn)
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)


def _click_types(name: str) -> tuple[type, ...]:
    """``name`` (ClickException, Abort) from the click that Typer uses (it vendors one) and
    from the standalone click package, where present."""
    out = []
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            out.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(out)


_CLICK_ERRORS = _click_types("ClickException")
_ABORTS = _click_types("Abort") + (typer.Abort,)


def fetch_hint(fetch: tuple[str, str] | None) -> str:
    """The command that supplies what an error says is missing (the library names it only)."""
    if not fetch:
        return ""
    kind, name = fetch
    return {"weights": f" (run: medtl weights fetch {name} --from FILE)",
            "data": f" (run: medtl data fetch {name} [--from FILE])"}.get(kind, "")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI in-process and return the exit code (used by tests and :func:`main`)."""
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")  # its chatter can quote header values
    try:
        status = app(args=argv, prog_name="medtl", standalone_mode=False)  # typer.Exit(n): click returns n
    except MedtlError as exc:
        msg = " ".join(str(exc).split())
        msg += fetch_hint(getattr(exc, "fetch", None))
        print(f"medtl: error: {msg}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except _CLICK_ERRORS as exc:  # usage errors: click's usage line, the error, status 2
        exc.show()
        return int(exc.exit_code)
    except _ABORTS:
        print("medtl: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("medtl: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))
