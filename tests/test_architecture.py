"""The package's import graph: ui/cli -> features -> methods, synthetic -> diffusion -> diffusers, never back up."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "lowdim_app"

# who may import whom (package level); the base layer (errors, config, metrics, data, plots) is open to all
LAYERS = {
    "ui": {"features", "diffusion", "data", "plots", "errors", "config", "metrics", "threads", "__init__"},
    "cli": {"features", "diffusion", "data", "errors", "config", "ui", "threads", "__init__"},
    "zerogpu_emulator": {"ui", "threads"},      # an entry point: the app under the real spaces.GPU wrapper
    "__main__": {"cli"},
    "features": {"methods", "synthetic", "diffusion", "data", "plots", "errors", "config", "metrics"},
    "methods": {"diffusion", "data", "errors", "metrics", "forksafe"},
    "synthetic": {"data", "errors", "metrics"},
    "plots": {"errors", "metrics", "forksafe"},
    "diffusion": {"errors", "config", "data", "forksafe"},
    "data": {"errors"},
    "metrics": {"errors"},
    "config": set(),
    "errors": set(),
    "threads": {"forksafe"},      # the thread rule (reads OMP_NUM_THREADS: the user's own choice)
    "forksafe": set(),
    "__init__": {"api", "errors"},   # the public API, imported lazily on first attribute access
    "api": {"features", "diffusion", "methods", "data", "errors", "config", "threads"},
}


def package_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def imports(path: Path) -> set[str]:
    """Top-level lowdim_app packages imported by a module (absolute or relative, at any depth)."""
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(PKG).parts) - 1   # packages between the module and lowdim_app
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("lowdim_app"):
                    parts = node.module.split(".")[1:]
                    out.add(parts[0] if parts else "__init__")
                continue
            up = node.level - 1
            if up > depth:
                continue
            base = list(path.relative_to(PKG).parts[:depth - up]) if depth - up > 0 else []
            mod = base + (node.module.split(".") if node.module else [])
            if mod:
                out.add(mod[0].removesuffix(".py"))
            else:   # "from . import x" at the top: x is a package, a module or a name of __init__
                out.update(a.name if (PKG / a.name).is_dir() or (PKG / f"{a.name}.py").is_file() else "__init__"
                           for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lowdim_app."):
                    out.add(alias.name.split(".")[1])
    return out


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        pkg = package_of(path)
        g.setdefault(pkg, set()).update(i for i in imports(path) if i != pkg)
    return g


def test_every_package_has_a_layer():
    assert set(graph()) <= set(LAYERS), set(graph()) - set(LAYERS)


def test_imports_only_go_down():
    bad = {(a, b) for a, deps in graph().items() for b in deps if b not in LAYERS.get(a, set())}
    assert not bad, f"imports against the layering: {sorted(bad)}"


def test_no_cycles():
    g = graph()
    seen, stack = set(), set()

    def visit(n, path):
        if n in stack:
            raise AssertionError(f"import cycle: {' -> '.join(path + [n])}")
        if n in seen:
            return
        stack.add(n)
        for m in g.get(n, ()):
            visit(m, path + [n])
        stack.discard(n)
        seen.add(n)

    for n in g:
        visit(n, [])


def test_no_gradio_below_the_ui():
    for path in PKG.rglob("*.py"):
        if package_of(path) in ("ui",):
            continue
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
        assert "gradio" not in names, path


def test_no_environment_reads_below_the_adapters():
    for path in PKG.rglob("*.py"):
        if package_of(path) in ("ui", "cli", "config", "__main__", "zerogpu_emulator"):
            continue
        text = path.read_text()
        assert "from_environment" not in text and "os.environ[" not in text and "os.environ.get(\"LOWDIM" not in text, path
