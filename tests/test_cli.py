"""The CLI as a whole: every command registered the same way, usage errors as click's short
usage message with exit status 2 (never a traceback), library errors as one line."""
from __future__ import annotations

import pytest

from medtl.cli import COMMANDS, GROUPS, app, run


def _subcommands():
    out = [[name] for name in COMMANDS]
    for group, sub in GROUPS.items():
        out += [[group, c.name or c.callback.__name__.replace("_", "-")] for c in sub.registered_commands]
    return out


def test_every_command_is_registered_and_has_help(capsys):
    names = {c.name for c in app.registered_commands}
    assert names == set(COMMANDS)
    assert {g.name for g in app.registered_groups} == set(GROUPS)
    for argv in _subcommands():
        assert run(argv + ["--help"]) == 0, argv
        assert "Usage: medtl " + " ".join(argv) in capsys.readouterr().out


@pytest.mark.parametrize("argv", _subcommands(), ids=lambda a: " ".join(a))
def test_unknown_option_is_a_usage_error(argv, capsys):
    assert run(argv + ["--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert "Usage: medtl" in err and "No such option: --no-such-flag" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["nosuch"], "No such command 'nosuch'"),
    (["probe", "no-such-probe", "RUN"], "No such command 'no-such-probe'"),
    (["finetune", "--seed", "abc"], "Invalid value for '--seed'"),
    (["compare", "somewhere"], "Missing option '--out'"),
    (["sweep", "--config"], "Option '--config' requires an argument"),
])
def test_usage_errors(argv, message, capsys):
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Error:" in err and "Traceback" not in err
    if argv[0] != "sweep":  # click gives no usage line for an option left without its value
        assert "Usage: medtl" in err


def test_library_error_is_one_line(tmp_path, capsys):
    assert run(["finetune", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medtl: error:") and "missing.yaml: config file not found" in err and "\n" not in err


@pytest.mark.parametrize("value", ["tpu9", "cuda:x"])
def test_device_is_validated_by_the_schema(value, capsys):
    assert run(["finetune", "--set", f"train.device={value}"]) == 2
    err = capsys.readouterr().err
    assert "train.device" in err and "Traceback" not in err


def test_sweep_seeds_must_be_positive(tmp_path, capsys):
    assert run(["sweep", "--config", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--seeds", "-3"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
