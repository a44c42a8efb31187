"""The code's shape: no import circle anywhere in framesink's own packages, and the core's
folders stay layered as framesink_core/__init__.py lists them (a module imports only from its
own folder and the folders below; peers do not import each other). Imports inside functions
count too: a lazy import is still a dependency, and hiding a circle in one is how it grows."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import framesink_core

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {  # package -> folder that holds it
    "framesink_core": ROOT / "lambdas",
    "framesink_handlers": ROOT / "lambdas",
    "framesink_receiver": ROOT / "lambdas",
    "framesink": ROOT,
}


def modules(roots: dict[str, Path]) -> dict[str, Path]:
    found = {}
    for package, base in roots.items():
        for path in sorted((base / package).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules ``name`` imports, at any depth of its code."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known]
            targets = submodules or [module]  # `from pkg import mod` depends on mod; else on pkg
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from pkg import mod` or `import pkg.mod`
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph(roots: dict[str, Path]) -> dict[str, set[str]]:
    known = modules(roots)
    edges = {name: imports(name, path, known) for name, path in known.items()}
    for name in known:  # importing a.b.c runs a/__init__ and a/b/__init__ first: not an edge we count
        edges[name] = {t for t in edges[name] if not name.startswith(t + ".")}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def layer_breaks(edges: dict[str, set[str]], layers) -> list[str]:
    """Core imports that go up a layer, sideways to a peer, or out of the core."""
    level = {package: n for n, peers in enumerate(layers) for package in peers}

    def folder(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if parts[0] == "framesink_core" and len(parts) > 1 else None

    breaks = []
    for importer, targets in edges.items():
        if not importer.startswith("framesink_core"):
            continue
        for target in sorted(targets):
            if not target.startswith("framesink_core"):
                breaks.append(f"{importer} -> {target} (out of the core)")
                continue
            mine, theirs = folder(importer), folder(target)
            if mine is None or theirs is None or mine == theirs:
                continue
            if mine not in level or theirs not in level:
                breaks.append(f"{importer} -> {target} (a folder LAYERS does not list)")
            elif level[theirs] >= level[mine]:
                breaks.append(f"{importer} -> {target} ({theirs} is not below {mine})")
    return breaks


def test_no_import_circle_in_framesinks_packages():
    assert circles(graph(PACKAGES)) == []


def test_the_core_is_layered_as_its_init_says():
    edges = graph(PACKAGES)
    assert layer_breaks(edges, framesink_core.LAYERS) == []
    listed = {package for peers in framesink_core.LAYERS for package in peers}
    on_disk = {p.parent.name for p in (ROOT / "lambdas/framesink_core").glob("*/__init__.py")}
    on_disk |= {p.stem for p in (ROOT / "lambdas/framesink_core").glob("*.py") if p.stem != "__init__"}
    assert listed == on_disk  # every folder (and top-level module) has its place, and no more
    for package in listed:  # and the core's docstring names each of them
        assert f"\n    {package} " in framesink_core.__doc__


def test_adapters_do_not_import_each_other():
    """Lambda handlers, the receiver and the CLI each call the core, never each other (the
    Lambda asset holds no CLI; the container holds no handlers)."""
    edges = graph(PACKAGES)
    crossing = [f"{a} -> {b}" for a, targets in edges.items() for b in targets
                if a.split(".")[0] in ("framesink_handlers", "framesink_receiver")
                and b.split(".")[0] not in (a.split(".")[0], "framesink_core")]
    assert crossing == []


def test_the_checks_catch_a_circle_and_an_upward_import(tmp_path):
    """The checker itself, on a small core that breaks both rules."""
    core = tmp_path / "framesink_core"
    for folder, text in {"shared": "from framesink_core.read import q\n", "read": "from framesink_core.read import p\n"}.items():
        (core / folder).mkdir(parents=True)
        (core / folder / "__init__.py").write_text("")
        (core / folder / ("s.py" if folder == "shared" else "q.py")).write_text(text)
    (core / "__init__.py").write_text("")
    (core / "read" / "p.py").write_text(textwrap.dedent("""
        def late():
            from .q import x  # a lazy import still counts
    """))
    edges = graph({"framesink_core": tmp_path})
    assert circles(edges) == [["framesink_core.read.p", "framesink_core.read.q"]]
    assert layer_breaks(edges, (("shared",), ("read",))) == [
        "framesink_core.shared.s -> framesink_core.read.q (read is not below shared)"]
