"""The shape of the imports (docs/design.md §5), read with `ast`: the core imports nothing from the studies or the
notebooks; inside gatecore/ and inside analysis/ no import cycle, module-level or inside a function; no module
imports another's private (`_name`) objects; and no Python file over MAX_LINES lines."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gatecore", "analysis")
MAX_LINES = 400


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path, top_level_only: bool) -> set[str]:
    """Absolute names `path` imports: `import x.y` gives x.y; `from .x import y` gives pkg.x and pkg.x.y
    (y may be a module); `from . import y` gives pkg.y only (the package itself is already importing)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path, root) if path.name == "__init__.py" else module_name(path, root).rpartition(".")[0]
    out = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            if node.module:
                out.add(mod)
            out |= {f"{mod}.{alias.name}" for alias in node.names}
    return out


def import_graph(package_dir: Path, root: Path, top_level_only: bool = True) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (at module level, or anywhere)."""
    modules = {module_name(f, root): f for f in sorted(package_dir.rglob("*.py"))}
    return {
        name: {m for m in imported(f, root, top_level_only) if m in modules and m != name}
        for name, f in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None (depth-first search)."""
    done, path = set(), []

    def visit(node):
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        path.append(node)
        for nxt in sorted(graph[node]):
            found = visit(nxt)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start)
        if found:
            return found
    return None


def test_core_imports_nothing_from_analysis_or_notebooks():
    bad = sorted(
        f"{module_name(f, ROOT)} -> {m}"
        for f in sorted((ROOT / "gatecore").rglob("*.py"))
        for m in imported(f, ROOT, top_level_only=False)
        if m.split(".")[0] in ("analysis", "notebooks")
    )
    assert not bad, bad


def private_imports(path: Path, root: Path, project=PACKAGES) -> list[str]:
    """`from m import _x`, and `m._x` on an imported module m, where m is a project module other than `path`'s own:
    '<module>: <what>' for each, anywhere in the file (functions included)."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    modules = {}  # local name -> the project module it stands for
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:  # `import a.b` binds a; `import a.b as c` binds c to a.b
                top = alias.name.split(".")[0]
                if top in project:
                    modules[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            if mod.split(".")[0] not in project:
                continue
            for alias in node.names:
                if _private(alias.name) and mod != me:
                    out.append(f"{me}: from {mod} import {alias.name}")
                modules.setdefault(alias.asname or alias.name, f"{mod}.{alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain, base = [node.attr], node.value
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules and modules[base.id] != me:
                out.append(f"{me}: {modules[base.id]}.{'.'.join(reversed(chain))}")
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def python_files():
    return sorted(f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_module_imports_form_no_cycle(package):
    graph = import_graph(ROOT / package, ROOT)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # stricter: no loop hidden inside a function either (compress <-> compress_bert, finetune curves <-> figures were)
    anywhere = import_graph(ROOT / package, ROOT, top_level_only=False)
    assert find_cycle(anywhere) is None, " -> ".join(find_cycle(anywhere))


def test_the_graphs_see_the_packages():
    assert {"gatecore.compress", "gatecore.fold", "gatecore.families", "gatecore.hessian.operator"} <= set(
        import_graph(ROOT / "gatecore", ROOT)
    )
    assert {"analysis.finetune.figures", "analysis.hessian.plots", "analysis.hessian.race.study"} <= set(
        import_graph(ROOT / "analysis", ROOT)
    )


def test_no_module_imports_another_modules_private_names():
    bad = [x for f in python_files() for x in private_imports(f, ROOT)]
    assert not bad, bad


def test_no_python_file_is_over_the_limit():
    files = python_files() + sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "notebooks").glob("*.py"))
    long = {str(f.relative_to(ROOT)): n for f in files if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_scans_see_a_cycle_and_a_study_import(tmp_path):
    pkg = tmp_path / "gatecore"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .a import x\n")
    (pkg / "a.py").write_text("from .b import y\nx = 1\n")
    (pkg / "b.py").write_text("from . import a\n\n\ndef y():\n    from analysis import data\n")
    graph = import_graph(pkg, tmp_path)
    assert graph == {"gatecore": {"gatecore.a"}, "gatecore.a": {"gatecore.b"}, "gatecore.b": {"gatecore.a"}}
    assert find_cycle(graph) == ["gatecore.a", "gatecore.b", "gatecore.a"]
    assert "analysis" in imported(pkg / "b.py", tmp_path, top_level_only=False)
    assert "analysis" not in imported(pkg / "b.py", tmp_path, top_level_only=True)


def test_the_scan_sees_private_imports(tmp_path):
    pkg = tmp_path / "gatecore"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("_x = 1\n\n\ndef f():\n    return _x\n")
    (pkg / "b.py").write_text(
        "import gatecore.a\nfrom . import a as mod\nfrom .a import f as _g\n\n\n"
        "def h():\n    from gatecore.a import _x\n    return gatecore.a._x + mod._x + _g() + _x\n"
    )
    assert private_imports(pkg / "a.py", tmp_path) == []
    assert sorted(private_imports(pkg / "b.py", tmp_path)) == [
        "gatecore.b: from gatecore.a import _x",
        "gatecore.b: gatecore.a._x",
        "gatecore.b: gatecore.a._x",
    ]
