"""The package's shape: imports point one way and files stay readable.

Every `import` of a keras_aim module, at module level or inside a
function, is an edge of the import graph; the graph must have no cycle (an
import moved into a function to dodge a cycle still counts). A module
that imports a name from a package's `__init__` depends on that `__init__`.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "keras_aim")
MAX_LINES = 500
# Files allowed above MAX_LINES, with the reason (also in the README).
LARGER = {}


def module_files(package_dir):
    """`{dotted module name: path}` of every .py file under a package."""
    base = os.path.dirname(package_dir)
    modules = {}
    for folder, _, names in os.walk(package_dir):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, base)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def import_edges(name, path, modules):
    """The keras_aim modules that module `name` imports, anywhere in it."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    edges = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    edges.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                anchor = name.split(".")
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                source = ".".join(anchor + ([source] if source else []))
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    edges.add(submodule)
                elif source in modules:
                    edges.add(source)
    edges.discard(name)
    return edges


def find_cycle(graph):
    """One import cycle as a list of modules, or `None`."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def import_graph(package_dir):
    modules = module_files(package_dir)
    return {
        name: import_edges(name, path, modules)
        for name, path in modules.items()
    }


def test_no_import_cycles():
    graph = import_graph(PACKAGE)
    assert len(graph) > 30
    assert "keras_aim.utils.preset_utils" in graph["keras_aim.models.base"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def write_package(root, files):
    for relative, text in files.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return os.path.join(root, "pkg")


@pytest.mark.parametrize(
    "files,cycle",
    [
        (  # a function-level import closing a cycle
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "from pkg.b import f\n",
                "pkg/b.py": "def f():\n    from pkg import a\n",
            },
            ["pkg.a", "pkg.b", "pkg.a"],
        ),
        (  # a name imported from a package __init__ that imports back
            {
                "pkg/__init__.py": "from pkg.sub.x import X\n",
                "pkg/sub/__init__.py": "from pkg.sub.x import X\n",
                "pkg/sub/x.py": "from .y import Y\nX = 1\n",
                "pkg/sub/y.py": "from pkg.sub import X\nY = 2\n",
            },
            ["pkg.sub", "pkg.sub.x", "pkg.sub.y", "pkg.sub"],
        ),
        (
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "import pkg.b\n",
                "pkg/b.py": "import os\n",
            },
            None,
        ),
    ],
)
def test_the_cycle_check_finds_cycles(tmp_path, files, cycle):
    package = write_package(str(tmp_path), files)
    found = find_cycle(import_graph(package))
    if cycle is None:
        assert found is None
    else:
        assert found[0] == found[-1] and set(found) == set(cycle)


def test_no_module_is_too_long():
    too_long = {}
    for name, path in module_files(PACKAGE).items():
        with open(path) as f:
            count = sum(1 for _ in f)
        limit = LARGER.get(os.path.relpath(path, ROOT), (MAX_LINES,))[0]
        if count > limit:
            too_long[name] = count
    assert not too_long, too_long


def module_level_flag_definitions(path):
    """Line numbers of `flags.DEFINE_*` calls run when `path` is imported."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    lines = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.If)):
            continue  # Run later (or under `__main__`), not at import.
        for call in ast.walk(node):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr.startswith("DEFINE")
            ):
                lines.append(call.lineno)
    return lines


def test_scripts_define_no_flags_at_import():
    # Tests import the example and benchmark scripts into one process; two
    # scripts defining the same absl flag at import (plan.py and
    # pretrain.py both have --head_hidden_dim) fail with DuplicateFlagError
    # whenever they share a test worker.
    found = {}
    scripts = 0
    for folder in ("examples", "benchmarks"):
        for path in script_files(folder):
            scripts += 1
            lines = module_level_flag_definitions(path)
            if lines:
                found[os.path.relpath(path, ROOT)] = lines
    assert scripts >= 10
    assert not found, found


def script_files(folder):
    """Every .py file under `ROOT/folder` (packages such as
    examples/findings/ included)."""
    paths = []
    for parent, _, names in os.walk(os.path.join(ROOT, folder)):
        paths += [os.path.join(parent, n) for n in names if n.endswith(".py")]
    return sorted(paths)


def test_no_example_is_too_long():
    # One job per script on the shared scaffold; the findings study is a
    # package of small modules (examples/findings/).
    too_long = {}
    for path in script_files("examples"):
        with open(path) as f:
            count = sum(1 for _ in f)
        if count > MAX_LINES:
            too_long[os.path.relpath(path, ROOT)] = count
    assert len(script_files("examples")) > 7
    assert not too_long, too_long


def test_the_flag_check_finds_module_level_definitions(tmp_path):
    path = tmp_path / "script.py"
    path.write_text(
        "from absl import flags\n"
        "flags.DEFINE_integer('a', 1, '')\n"
        "def define_flags():\n"
        "    flags.DEFINE_integer('b', 1, '')\n"
        "if __name__ == '__main__':\n"
        "    define_flags()\n"
    )
    assert module_level_flag_definitions(str(path)) == [2]


# --- The map of the package (docs/architecture.md) ---------------------------

# What may sit at the top of the package; everything else lives in a folder.
TOP_LEVEL_MODULES = {"__init__.py", "losses.py", "version.py"}
TOP_LEVEL_FOLDERS = {
    "callbacks",
    "convert",
    "data",
    "distribution",
    "export",
    "layers",
    "models",
    "optimizers",
    "probing",
    "training",
    "utils",
}
# The modules that define model classes: the loaders, readers and preset
# tables must never reach them (a loader gets the class to build).
MODEL_CLASS_MODULES = {
    "keras_aim.models.base",
    "keras_aim.models.backbone",
    "keras_aim.models.task",
}
MODEL_CLASS_SUFFIXES = ("_backbone", "_image_classifier", "_pretrainer")


def package_entries():
    names = os.listdir(PACKAGE)
    modules = {n for n in names if n.endswith(".py")}
    folders = {
        n
        for n in names
        if os.path.isdir(os.path.join(PACKAGE, n)) and not n.startswith("__")
    }
    return modules, folders


def test_the_top_level_holds_only_the_map():
    modules, folders = package_entries()
    assert modules <= TOP_LEVEL_MODULES, sorted(modules - TOP_LEVEL_MODULES)
    assert folders <= TOP_LEVEL_FOLDERS, sorted(folders - TOP_LEVEL_FOLDERS)


def reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def is_model_class_module(name):
    return name in MODEL_CLASS_MODULES or name.endswith(MODEL_CLASS_SUFFIXES)


def test_loaders_and_preset_tables_never_reach_the_model_classes():
    graph = import_graph(PACKAGE)
    families = family_folders()
    assert families, "no model family folder"
    starts = [
        "keras_aim.utils.preset_utils",
        "keras_aim.convert.loaders",
        "keras_aim.convert.readers",
        *[f"keras_aim.models.{f}.{f}_presets" for f in families],
        *[f"keras_aim.models.{f}.{f}_layout" for f in families],
    ]
    for name in starts:
        assert name in graph, name
        models = {m for m in reachable(graph, name) if is_model_class_module(m)}
        assert not models, (name, sorted(models))


def family_folders():
    folder = os.path.join(PACKAGE, "models")
    return sorted(
        n
        for n in os.listdir(folder)
        if os.path.isdir(os.path.join(folder, n)) and not n.startswith("__")
    )


def test_every_family_folder_has_the_keras_hub_files():
    for family in family_folders():
        names = set(os.listdir(os.path.join(PACKAGE, "models", family)))
        for role in ("backbone", "presets"):
            assert f"{family}_{role}.py" in names, (family, role)


def callback_classes(path):
    """Names of the classes in `path` that subclass a `...Callback`."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = getattr(base, "attr", getattr(base, "id", ""))
                if name.endswith("Callback"):
                    found.append(node.name)
    return found


def test_every_callback_has_its_own_file_and_test():
    folder = os.path.join(PACKAGE, "callbacks")
    files = [n for n in os.listdir(folder) if n.endswith(".py")]
    checked = 0
    for name in sorted(files):
        classes = callback_classes(os.path.join(folder, name))
        if name == "__init__.py":
            assert classes == []
            continue
        assert len(classes) == 1, (name, classes)
        test = os.path.join(ROOT, "tests", f"test_{name}")
        assert os.path.exists(test), f"{name} has no tests/test_{name}"
        with open(test) as f:
            assert classes[0] in f.read(), (test, classes[0])
        checked += 1
    assert checked >= 3
    # No callback class anywhere else in the package.
    for module, path in module_files(PACKAGE).items():
        if not module.startswith("keras_aim.callbacks"):
            assert callback_classes(path) == [], module


def test_the_map_checks_can_fail(tmp_path):
    loose = tmp_path / "pkg"
    loose.mkdir()
    (loose / "callback.py").write_text(
        "import keras\nclass A(keras.callbacks.Callback):\n    pass\n"
        "class B(keras.callbacks.Callback):\n    pass\n"
    )
    assert callback_classes(str(loose / "callback.py")) == ["A", "B"]
    graph = {"a": {"b"}, "b": {"keras_aim.models.aim.aim_backbone"}}
    assert any(is_model_class_module(m) for m in reachable(graph, "a"))
