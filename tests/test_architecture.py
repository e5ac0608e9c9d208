"""The direction of imports (docs/design.md §5): the core imports nothing from the studies or the
notebooks, and there is no import cycle inside gatecore (module-level imports, read with `ast`)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path, top_level_only: bool) -> set[str]:
    """Absolute names `path` imports: `import x.y` gives x.y; `from .x import y` gives pkg.x and pkg.x.y
    (y may be a module); `from . import y` gives pkg.y only (the package itself is already importing)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path, root) if path.name == "__init__.py" else module_name(path, root).rpartition(".")[0]
    out = set()
    for node in (tree.body if top_level_only else ast.walk(tree)):
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
    return {name: {m for m in imported(f, root, top_level_only) if m in modules and m != name}
            for name, f in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None (depth-first search)."""
    done, path = set(), []

    def visit(node):
        if node in path:
            return path[path.index(node):] + [node]
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
    bad = sorted(f"{module_name(f, ROOT)} -> {m}" for f in sorted((ROOT / "gatecore").rglob("*.py"))
                 for m in imported(f, ROOT, top_level_only=False) if m.split(".")[0] in ("analysis", "notebooks"))
    assert not bad, bad


def test_core_module_imports_form_no_cycle():
    graph = import_graph(ROOT / "gatecore", ROOT)
    assert {"gatecore.compress", "gatecore.fold", "gatecore.families", "gatecore.hessian.operator"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # stricter: no loop hidden inside a function either (compress <-> compress_bert was one)
    anywhere = import_graph(ROOT / "gatecore", ROOT, top_level_only=False)
    assert find_cycle(anywhere) is None, " -> ".join(find_cycle(anywhere))


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
