"""The package layout's rules, checked from the imports of every project module.

* ``common/`` (the Flower-free learning core) imports no flwr, ``proto``,
  ``server_app``, ``client_app`` or ``experiments``;
* ``server_app/`` and ``client_app/`` never import each other (``experiments/``
  may import both);
* generated ``*_pb2`` modules are imported only inside ``proto/``;
* no import cycles between the project's modules (imports inside functions count);
* no module over 400 lines (generated code aside);
* no function of ``server_app/`` or ``client_app/`` over 50 lines, counted from
  its ``def`` to its last line (the apps read as short named steps).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "proto", "server_app", "client_app", "experiments")
GENERATED = ("proto/mlecs/",)
MAX_LINES = 400
MAX_FUNCTION_LINES = 50
SHORT_FUNCTIONS = ("server_app", "client_app")  # packages whose functions stay short
# package -> top-level names it must not import
FORBIDDEN = {
    "common": ("flwr", "proto", "server_app", "client_app", "experiments"),
    "proto": ("server_app", "client_app", "experiments"),
    "server_app": ("client_app", "experiments"),
    "client_app": ("server_app", "experiments"),
}


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` of the project packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports, anywhere in its body (project modules resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # ``from pkg import mod`` imports the module ``pkg.mod``
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return found


def check_layout(root: Path) -> list[str]:
    """Every violation of the layout rules under ``root``, human-readable."""
    mods = modules(root)
    known = set(mods)
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        rel = path.relative_to(root).as_posix()
        if rel.startswith(GENERATED):
            continue
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            problems.append(f"{rel} has {lines} lines (at most {MAX_LINES})")
        deps = imports(name, path, known)
        top = name.split(".")[0]
        for dep in sorted(deps):
            if dep.split(".")[0] in FORBIDDEN.get(top, ()):
                problems.append(f"{name} imports {dep} ({top}/ must not import it)")
            if dep.rpartition(".")[2].endswith("_pb2") or dep.endswith("_pb2_grpc"):
                if top != "proto":
                    problems.append(f"{name} imports generated {dep} outside proto/")
        graph[name] = {d for d in deps if d in known and d != name}
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def long_functions(root: Path) -> list[str]:
    """Every function of the apps' packages longer than ``MAX_FUNCTION_LINES``."""
    problems = []
    for package in SHORT_FUNCTIONS:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        rel = path.relative_to(root).as_posix()
                        problems.append(f"{rel}:{node.lineno} {node.name} has {lines} lines")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_project_keeps_its_layout_rules():
    assert check_layout(ROOT) == []


def test_no_function_of_the_apps_is_over_fifty_lines():
    assert long_functions(ROOT) == []


def test_the_function_length_check_counts_from_def_to_the_last_line(tmp_path: Path):
    # Prepare: one function at the limit, one a line over it, in each app package
    at_limit = "def ok():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 1)
    over = "class A:\n    def long(self):\n" + "        x = 1\n" * MAX_FUNCTION_LINES
    for package in SHORT_FUNCTIONS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "m.py").write_text(at_limit + over)
    # Execute
    problems = long_functions(tmp_path)
    # Assert: only the method over the limit, in both packages, with its length
    assert problems == [
        f"{p}/m.py:{MAX_FUNCTION_LINES + 2} long has {MAX_FUNCTION_LINES + 1} lines"
        for p in SHORT_FUNCTIONS
    ]


def test_the_checker_finds_each_kind_of_violation(tmp_path: Path):
    # Prepare: a small tree breaking every rule once
    files = {
        "common/__init__.py": "",
        "common/a.py": "import flwr\nfrom common import b\n",
        "common/b.py": "def f():\n    from common.a import x\n",
        "proto/__init__.py": "",
        "proto/mlecs/__init__.py": "",
        "proto/mlecs/thing_pb2.py": "\n" * 500,
        "server_app/__init__.py": "",
        "server_app/s.py": "from client_app.c import y\nfrom proto.mlecs import thing_pb2\n",
        "client_app/__init__.py": "",
        "client_app/c.py": "x = 1\n" * (MAX_LINES + 1),
        "experiments/__init__.py": "",
        "experiments/e.py": "from server_app import s\nfrom client_app import c\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    # Execute
    problems = check_layout(tmp_path)
    # Assert: each rule fires, and nothing else (experiments may import both apps)
    text = "\n".join(problems)
    assert "common.a imports flwr" in text
    assert "server_app.s imports client_app.c" in text
    assert "generated proto.mlecs.thing_pb2 outside proto/" in text
    assert "import cycle: common.a -> common.b" in text
    assert f"client_app/c.py has {MAX_LINES + 1} lines" in text
    assert len(problems) == 5, problems


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_checked(package: str):
    assert any(name.startswith(package) for name in modules(ROOT))
