"""Imports flow one way, cli.py -> stacks -> provision -> inventory, with no cycle between
modules; imports inside functions count too. Library modules neither parse flags nor print.

Read from the source (AST), so an import that only runs in a rare branch is still seen."""
from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {"inventory": 0, "provision": 1, "stacks": 2, "cli": 3}
LIBRARY = ("inventory", "provision", "stacks")


def layer(module: str) -> int:
    """cli.py is the command line; every module of the packages is library, by package."""
    return LAYERS[module.split(".")[0]]


def _modules() -> dict[str, str]:
    """Module name -> file, for cli.py and every module of the three packages."""
    out = {"cli": os.path.join(REPO, "cli.py")}
    for pkg in LIBRARY:
        for root, dirs, files in os.walk(os.path.join(REPO, pkg)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(root, f), REPO)[:-3].replace(os.sep, ".")
                    out[rel.removesuffix(".__init__")] = os.path.join(root, f)
    return out


MODULES = _modules()


def _package_of(name: str, path: str) -> str:
    return name if path.endswith("__init__.py") else name.rpartition(".")[0]


def _imports(name: str, path: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import of one of our modules, anywhere in the file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name, path).split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            for a in node.names:       # `from pkg import module` imports the module
                sub = f"{mod}.{a.name}"
                found.append((sub if sub in MODULES else mod, node.lineno))
    return [(m, line) for m, line in found if m.split(".")[0] in LAYERS]


def _graph() -> dict[str, set[str]]:
    return {name: {m for m, _ in _imports(name, path)} for name, path in MODULES.items()}


def test_every_import_of_ours_names_a_module_of_this_checkout():
    # an editable install of another checkout would otherwise answer for a moved module
    missing = [f"{os.path.relpath(path, REPO)}:{line}: {m}"
               for name, path in MODULES.items() for m, line in _imports(name, path)
               if m not in MODULES]
    assert missing == []


def test_no_upward_import():
    upward = []
    for name, path in MODULES.items():
        for m, line in _imports(name, path):
            if layer(m) > layer(name):
                upward.append(f"{os.path.relpath(path, REPO)}:{line}: imports {m}")
    assert upward == []


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as a list of modules (first repeated at the end), or []."""
    state: dict[str, int] = {}      # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m == n:
                continue
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def test_no_import_cycle():
    assert _cycle(_graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def _library_files():
    return [(n, p) for n, p in MODULES.items() if layer(n) < LAYERS["cli"]]


def test_library_modules_neither_parse_flags_nor_print():
    bad = []
    for name, path in _library_files():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        rel = os.path.relpath(path, REPO)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if "argparse" in names:
                    bad.append(f"{rel}:{node.lineno}: imports argparse")
            elif isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr") \
                    and isinstance(node.value, ast.Name) and node.value.id == "sys":
                bad.append(f"{rel}:{node.lineno}: uses sys.{node.attr}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "print" \
                    and not any(k.arg == "file" for k in node.keywords):
                bad.append(f"{rel}:{node.lineno}: print() to stdout")
    assert bad == []


# provision/ by stage: each folder imports only the folders before it (and itself); the
# orchestrations at the package's top (bootstrap: up/down, restore, the engine upgrade) may use
# every stage.
STAGES = ["base", "remote", "hosts", "engine_api", "engine", "swarm", "images"]
ORCHESTRATIONS = ["provision.bootstrap", "provision.restore", "provision.upgrade"]


def stage(module: str) -> int:
    """The rank of a provision module's stage; modules at provision/'s top rank above all."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in STAGES:
        return STAGES.index(parts[1])
    return len(STAGES)


def test_every_provision_module_sits_in_a_stage_or_on_top():
    loose = [n for n in MODULES if n.startswith("provision.") and n.count(".") == 1
             and n.split(".")[1] not in STAGES and n not in ORCHESTRATIONS]
    assert loose == []


def test_provision_stages_import_one_way():
    backwards = []
    for name, path in MODULES.items():
        if not name.startswith("provision."):
            continue
        for m, line in _imports(name, path):
            if m.startswith("provision.") and stage(m) > stage(name):
                backwards.append(f"{os.path.relpath(path, REPO)}:{line}: imports {m}")
    assert backwards == []


def test_the_stage_order_sees_a_backward_import():
    assert stage("provision.remote.ssh") < stage("provision.swarm.step") < stage("provision.bootstrap")
    assert stage("provision.hosts.lab.image") < stage("provision.images.debian")


def test_every_docker_cli_command_line_is_built_in_one_module():
    """`docker ...` command lines are data in provision/remote/docker_cli.py; a string that
    starts a docker CLI command anywhere else in the library is a second place to look."""
    import re
    starts = re.compile(r"(^|[;|&({$]\s*|timeout \d+ )docker (version|info|config|swarm|node|"
                        r"service|image|inspect|ps|load|tag|system|import)\b")
    found = []
    for name, path in _library_files():
        if name == "provision.remote.docker_cli":
            continue
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                      and n.body and isinstance(n.body[0], ast.Expr)}
        # messages naming a command (`docker swarm leave --force` on it) are not command lines
        docstrings |= {id(c) for r in ast.walk(tree) if isinstance(r, ast.Raise)
                       for c in ast.walk(r)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in docstrings and starts.search(node.value):
                found.append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "of" \
                    and node.args and isinstance(node.args[0], ast.Constant) \
                    and node.args[0].value == "docker":
                found.append(f"{os.path.relpath(path, REPO)}:{node.lineno}: Command.of(docker)")
    assert found == []


def test_every_test_file_names_its_tier():
    tests = os.path.join(REPO, "tests")
    untiered = sorted(f for f in os.listdir(tests) if f.startswith("test_") and f.endswith(".py")
                      and not f.endswith(("_units.py", "_lab.py")))
    assert untiered == []
