"""The house rules of the code base, checked on the source (fast: ast only, nothing imported).

- The run-folder file names and the ``seed-K`` naming are spelled only in ``medtl/runs.py``.
- No module imports a module that imports it back (function-level imports included).
- No function is over 80 lines unless a comment on its ``def`` line says why.
- Library modules (everything outside ``medtl/cli``) name parameters, not ``--flags``, in
  their error messages.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "medtl"
RUN_FILE_NAMES = re.compile(r"""["'](metrics\.json|predictions_test\.npz|config\.yaml|checkpoint_best\.pt|"""
                            r"""failed\.json|log\.csv|train\.log|sweep\.json|sweep_config\.yaml|state/last\.pt)["']"""
                            r"""|["']seed-""")


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _is_package(mod: str) -> bool:
    return MODULES[mod].name == "__init__.py"


def _imports(mod: str) -> set[str]:
    """medtl modules that ``mod`` imports, anywhere in the file (``from X import y`` counts X, and
    X.y where that is a module)."""
    tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"))
    base = mod.split(".") if _is_package(mod) else mod.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("medtl"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = base[:len(base) - (node.level - 1)]
                target = ".".join(pkg + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("medtl"):
                continue
            found.add(target)
            for a in node.names:
                if f"{target}.{a.name}" in MODULES:
                    found.add(f"{target}.{a.name}")
    return {m for m in found if m in MODULES and m != mod}


def test_run_file_names_only_in_runs_module():
    offenders = []
    for mod, path in MODULES.items():
        if mod == "medtl.runs":
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if RUN_FILE_NAMES.search(line):
                offenders.append(f"{path.relative_to(PKG.parent)}:{i}: {line.strip()}")
    assert not offenders, "run-folder names outside medtl/runs.py:\n" + "\n".join(offenders)


def test_no_module_imports_a_module_that_imports_it_back():
    graph = {m: _imports(m) for m in MODULES}

    def is_ancestor_package(a: str, b: str) -> bool:  # a package's __init__ importing its own submodule
        return b.startswith(a + ".")

    pairs = sorted({tuple(sorted((a, b))) for a, deps in graph.items() for b in deps
                    if a in graph.get(b, ()) and not is_ancestor_package(a, b) and not is_ancestor_package(b, a)})
    assert not pairs, f"mutual imports: {pairs}"


def _long_functions(limit: int = 80) -> list[str]:
    out = []
    for mod, path in MODULES.items():
        src = path.read_text(encoding="utf-8")
        lines = src.splitlines()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit and "long:" not in lines[node.lineno - 1]:
                    out.append(f"{path.relative_to(PKG.parent)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_over_80_lines_without_a_reason():
    assert not _long_functions(), "functions over 80 lines (add '# long: why' on the def line):\n" + \
        "\n".join(_long_functions())


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")


def _medtl_flags() -> set[str]:
    """Every ``--flag`` medtl's own CLI declares (quoting another tool's flags is fine)."""
    flags: set[str] = set()
    for path in (PKG / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("Option", "Argument"):
                flags.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                             and a.value.startswith("--"))
    return flags


def _message_strings(tree: ast.AST):
    """String constants inside ``raise`` statements, logging/warning calls and ``check_*(name, ...)`` calls."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            yield from (n for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("info", "warning", "error", "warn"):
            yield from (n for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("check_"):
            yield from (n for n in node.args if isinstance(n, ast.Constant) and isinstance(n.value, str))


def test_library_messages_name_parameters_not_flags():
    ours = _medtl_flags()
    assert {"--out", "--seed", "--restart"} <= ours
    offenders = []
    for mod, path in MODULES.items():
        if mod.startswith("medtl.cli"):
            continue
        for const in _message_strings(ast.parse(path.read_text(encoding="utf-8"))):
            if "mlflow " in const.value:  # quotes another program's command line
                continue
            for flag in set(FLAG.findall(const.value)) & ours:
                offenders.append(f"{path.relative_to(PKG.parent)}:{const.lineno}: {flag} in {const.value!r}")
    assert not offenders, "CLI flags in library messages:\n" + "\n".join(offenders)


@pytest.mark.parametrize("bad", ['x = "metrics.json"', "y = f'seed-{k}'"])
def test_the_name_check_would_catch_a_literal(bad):
    assert RUN_FILE_NAMES.search(bad)
