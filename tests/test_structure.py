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


def _ancestors(mod: str) -> list[str]:
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES]


def _import_graph() -> dict[str, set[str]]:
    """Module -> the medtl modules importing it executes: what it imports anywhere in the file
    (top level and inside functions), plus each imported module's enclosing packages' ``__init__``
    (importing ``medtl.sr.io`` runs ``medtl/sr/__init__.py`` first), except the packages that
    enclose the importer itself (they are already being initialised when it runs)."""
    graph = {}
    for m in MODULES:
        own = set(_ancestors(m)) | {m}
        deps = set()
        for t in _imports(m):
            deps.update([t, *_ancestors(t)])
        graph[m] = {d for d in deps if d not in own}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each as a sorted list:
    every import cycle, of any length, lies inside one."""
    index, low, on, stack, out = {}, {}, set(), [], []

    def visit(v: str) -> None:  # recursion depth <= number of modules (~120)
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_of(mod: str) -> str:
    """The room of a module: ``medtl.<sub>`` for a subpackage's modules, else the module itself."""
    parts = mod.split(".")
    return ".".join(parts[:2])


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for m, deps in _import_graph().items():
        graph.setdefault(_package_of(m), set()).update(_package_of(d) for d in deps if _package_of(d) != _package_of(m))
    graph.pop("medtl", None)  # the top-level __init__ (version string) imports nothing of medtl
    return graph


def test_no_import_cycle_of_any_length_between_modules():
    assert _cycles(_import_graph()) == []


def test_no_import_cycle_of_any_length_between_packages():
    """medtl.data, medtl.sr, medtl.train, ... (and top-level modules such as medtl.runs) form a
    layered house: no chain of imports, lazy ones included, leads from a package back to itself."""
    assert _cycles(_package_graph()) == []


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, ["a", "b", "c"]),
    ({"a": {"b"}, "b": set()}, None),
])
def test_the_cycle_check_finds_a_three_step_cycle(graph, cycle):
    assert _cycles(graph) == ([cycle] if cycle else [])


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
