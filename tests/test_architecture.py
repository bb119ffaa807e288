"""The package's shape: imports go one way (no module imports one that imports it back, directly or
through others), and the product carries no code paths for tests."""
import ast
import re
from pathlib import Path

from conftest import PROJECT


def package_imports(package: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports, anywhere in its body (a lazy import inside a
    function is still an edge: it runs whenever that function does)."""
    name = package.name
    modules = {p.stem for p in package.glob("*.py")}
    edges = {}
    for path in package.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 or node.module == name or (node.module or "").startswith(name + "."):
                    base = (node.module or "").removeprefix(name).lstrip(".") if node.level == 0 else node.module
                    if base:  # from .x import y  /  from diam.x import y
                        found.add(base.split(".")[0])
                    else:  # from . import x, y  /  from diam import x, y
                        found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[1] for alias in node.names
                             if alias.name.startswith(name + "."))
        edges[path.stem] = (found & modules) - {path.stem}
    return edges


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk, each as the path that closes it."""
    cycles, state = [], {}  # state: 1 = on the current path, 2 = finished

    def visit(module, path):
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return cycles


def test_the_package_imports_one_way():
    edges = package_imports(PROJECT / "diam")
    assert edges["cli"] >= {"settings"} and "cli" not in edges["experiment"]  # the edges are read at all
    assert import_cycles(edges) == []


def test_the_cycle_check_finds_a_cycle_through_a_lazy_import(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("import os\n\ndef thing():\n    from pkg.c import other\n    return other\n")
    (package / "c.py").write_text("from . import a\nother = 1\n")
    (package / "d.py").write_text("from .a import thing\n")  # imports into the cycle, not part of it
    assert import_cycles(package_imports(package)) == [["a", "b", "c", "a"]]
    (package / "c.py").write_text("other = 1\n")
    assert import_cycles(package_imports(package)) == []


def test_the_product_has_no_test_hooks():
    hooks = re.compile(r"for_tests|KILL_ONCE|PYTEST_CURRENT_TEST")
    offenders = [f"{path.name}:{n}" for path in sorted((PROJECT / "diam").glob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if hooks.search(line)]
    assert offenders == []


def test_the_environment_is_read_at_the_edge_only():
    """A step reads the environment once, where its settings are resolved (settings.read_environment,
    speed.speed_from_environment); the grid's executor passes the driver's variables to its workers.
    Every other module takes the folders and switches it needs as arguments."""
    edge = {"settings.py", "speed.py", "grid.py"}
    readers = [f"{path.name}:{n}" for path in sorted((PROJECT / "diam").glob("*.py")) if path.name not in edge
               for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"os\.environ|getenv", line)]
    assert readers == []
