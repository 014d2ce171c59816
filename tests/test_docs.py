"""Every code block in README.md, CONTRIBUTING.md and docs/*.md is checked.

The rules (CONTRIBUTING.md, "Code blocks in the docs", says the same):

- A fence's first word is its language; it must be one this file knows.
- ```python blocks run. The blocks of one page run in order in one
  namespace, in a fresh empty working directory, so a later block can use
  the names (and files) of an earlier one. ```python jax (or torch,
  tensorflow; several may be listed) runs only on those backends.
- No weights can be downloaded here, so this file stands in for the
  released presets. `AIMBackbone.from_preset` and
  `AIMImageClassifier.from_preset` are wrapped: the names aim_600m, aim_1b,
  aim_3b and aim_7b (and their hf:// handles) load instead one tiny Keras
  preset that this file writes with `save_to_preset`:
  `AIMBackbone(image_shape=(224, 224, 3), patch_size=14, hidden_dim=48,
  num_layers=4, num_heads=4)` with random weights, the release's image
  converter and a 1000-class attentive probe on blocks [1, 2]
  (`probe_layers="last"` gets one on all four blocks). A page that names
  the folder `aim-600M` also finds one in its working directory: a tiny
  random checkpoint of the same architecture in the released hub layout
  (config.json + model.safetensors), as `huggingface-cli download
  apple/aim-600M --local-dir aim-600M` would leave it. The AIMv2 names
  (`AIMv2Backbone.from_preset("aimv2_large_patch14_224")`, ...) load a
  tiny random `AIMv2Backbone` of the same kind (width 48, 4 blocks, 4
  heads, patch 14, 224; sin-cos for the native one), and
  `AIMv2LiT.from_preset("aimv2_large_patch14_224_lit")` a tiny random
  LiT model on that image tower, with a two-block text tower (context 77)
  and a tiny CLIP BPE tokenizer. Input sizes, token
  counts and code paths are the real ones; widths, depths and numbers are
  not. On jax, most XLA optimisations are off while the blocks run: the
  same results, compiled in a fraction of the time.
- ```bash / ```sh / ```shell / ```console blocks are not run; every
  command in them is checked (in ```console only the `$ ` lines): `make T`
  needs a target T in the Makefile; `python P.py --flag ...` (also after
  `VAR=value`, `torchrun ...`) needs P.py to exist and every `--flag` (and
  `--noflag` for an absl boolean) to be defined by P.py or the local
  modules it imports, read from their absl `flags.DEFINE_*` and argparse
  `add_argument` calls; `python -m keras_aim.convert --flag` is checked
  against keras_aim.convert's argparse parser; `python -m pytest PATH`
  and `bash PATH` need PATH to exist. A script that hands unknown
  arguments on (`parse_known_args`) is checked for existence only. Other
  commands (pip, git, huggingface-cli, ...) are not checked.
- ```text blocks and blocks without a language (tables, outputs, trees)
  are not run.
- Relative links must point to files (and headings) that exist;
  README.md stays under 200 lines.
"""

import ast
import difflib
import functools
import glob
import importlib.util
import inspect
import os
import re
import shlex
import sys
import traceback

import keras
import pytest

import keras_aim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", "CONTRIBUTING.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs/*.md"))
)
README_MAX_LINES = 200

PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell", "console"}
NOT_RUN = {"text", ""}
BACKENDS = {"jax", "torch", "tensorflow"}

RELEASED = ("aim_600m", "aim_1b", "aim_3b", "aim_7b")
STAND_IN = dict(
    image_shape=(224, 224, 3),
    patch_size=14,
    hidden_dim=48,
    num_layers=4,
    num_heads=4,
)
STAND_IN_BEST = [1, 2]
HUB_HANDLES = {
    "hf://apple/aim-600M": "aim_600m",
    "hf://apple/aim-1B": "aim_1b",
    "hf://apple/aim-3B": "aim_3b",
    "hf://apple/aim-7B": "aim_7b",
}
HUB_FOLDER = "aim-600M"
# AIMv2 presets (and their hf:// handles) load a tiny random AIMv2 trunk of
# the same kind (sin-cos for the native one).
STAND_IN_V2 = dict(
    image_shape=(224, 224, 3),
    patch_size=14,
    hidden_dim=48,
    num_layers=4,
    num_heads=4,
    intermediate_dim=128,
)
# The LiT preset (and its handle) loads a tiny random AIMv2LiT: the image
# tower above, a two-block text tower (context 77) and a tiny CLIP BPE
# tokenizer that spells any text (tests/reference_lit.py).
LIT_NAMES = (
    "aimv2_large_patch14_224_lit",
    "hf://apple/aimv2-large-patch14-224-lit",
)
STAND_IN_TEXT = dict(
    hidden_dim=32,
    num_layers=2,
    num_heads=2,
    intermediate_dim=64,
    max_sequence_length=77,
)

ABSL_BUILTIN_FLAGS = {
    "help",
    "helpfull",
    "helpshort",
    "helpxml",
    "flagfile",
    "undefok",
    "only_check_args",
}


class DocsError(AssertionError):
    pass


# ---------------------------------------------------------------------------
# Reading the pages.
# ---------------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def code_blocks(text):
    """`(language, options, first line number, code)` per fenced block."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        words = match["info"].strip().split()
        start = i + 1
        body = []
        i += 1
        while i < len(lines):
            close = FENCE.match(lines[i])
            if (
                close
                and close["fence"][0] == fence[0]
                and len(close["fence"]) >= len(fence)
                and not close["info"].strip()
            ):
                break
            line = lines[i]
            body.append(line[indent:] if line[:indent].isspace() else line)
            i += 1
        if i == len(lines):
            raise DocsError(f"line {start}: the block is never closed")
        language = words[0].lower() if words else ""
        blocks.append((language, words[1:], start + 1, "\n".join(body)))
        i += 1
    return blocks


def read(page):
    with open(os.path.join(ROOT, page)) as f:
        return f.read()


def blocks_of(page, languages):
    return [b for b in code_blocks(read(page)) if b[0] in languages]


def pages_with(languages):
    return [p for p in PAGES if blocks_of(p, languages)]


# ---------------------------------------------------------------------------
# Running python blocks, with stand-ins for the released presets.
# ---------------------------------------------------------------------------


class StandIns:
    """Tiny Keras presets (and a hub folder) in place of the released ones."""

    def __init__(self, root):
        self.root = root
        self.folders = {}

    def preset(self, probe_layers):
        kind = "last" if probe_layers == "last" else "best"
        if kind not in self.folders:
            classifier = keras_aim.AIMImageClassifier(
                keras_aim.AIMBackbone(**STAND_IN),
                num_classes=1000,
                probe_layers="last" if kind == "last" else STAND_IN_BEST,
                image_converter=keras_aim.AIMImageConverter(),
            )
            folder = os.path.join(self.root, f"stand_in_{kind}")
            classifier.save_to_preset(folder)
            self.folders[kind] = folder
        return self.folders[kind]

    def v2_preset(self, name):
        from keras_aim.models.aimv2.aimv2_presets import PRESETS

        if name.startswith("hf://apple/"):
            name = name[len("hf://apple/") :].replace("-", "_")
            name = name.replace("1B", "1b").replace("3B", "3b")
        if name not in PRESETS:
            return None
        kind = PRESETS[name]["backbone"]["position_embedding"]
        if kind not in self.folders:
            backbone = keras_aim.AIMv2Backbone(
                **STAND_IN_V2, position_embedding=kind
            )
            folder = os.path.join(self.root, f"stand_in_v2_{kind}")
            backbone.save_to_preset(folder)
            self.folders[kind] = folder
        return self.folders[kind]

    def lit_preset(self, name):
        """A tiny random AIMv2LiT preset (with a tiny CLIP tokenizer) for
        the LiT preset's name or hub handle."""
        if name not in LIT_NAMES:
            return None
        if "lit" not in self.folders:
            import reference_lit

            folder = os.path.join(self.root, "stand_in_lit")
            reference_lit.write_tokenizer_files(folder + "_tokenizer")
            tokenizer = keras_aim.AIMv2Tokenizer.from_folder(
                folder + "_tokenizer"
            )
            text = keras_aim.AIMv2TextEncoder(
                **STAND_IN_TEXT,
                vocabulary_size=tokenizer.vocabulary_size,
                eos_token_id=tokenizer.end_token_id,
            )
            lit = keras_aim.AIMv2LiT(
                keras_aim.AIMv2Backbone(**STAND_IN_V2),
                text,
                projection_dim=32,
                image_converter=keras_aim.AIMImageConverter(),
                tokenizer=tokenizer,
            )
            lit.save_to_preset(folder)
            self.folders["lit"] = folder
        return self.folders["lit"]

    def hub_folder(self):
        folder = os.path.join(self.root, HUB_FOLDER)
        if not os.path.isdir(folder):
            import reference  # tests/reference.py: the released layouts

            state_dict = reference.random_state_dict(
                STAND_IN["hidden_dim"],
                STAND_IN["num_layers"],
                STAND_IN["num_heads"],
                STAND_IN["patch_size"],
                num_classes=1000,
            )
            config = reference.hub_config(
                state_dict, STAND_IN["num_heads"], img_size=224
            )
            reference.write_hub_folder(folder, state_dict, config)
        return folder


@pytest.fixture(scope="session")
def stand_ins(tmp_path_factory):
    return StandIns(str(tmp_path_factory.mktemp("stand_in_presets")))


def use_stand_ins(monkeypatch, stand_ins):
    """Wraps `from_preset` so that released names load the stand-ins."""
    for cls in (keras_aim.AIMBackbone, keras_aim.AIMImageClassifier):
        original = inspect.getattr_static(cls, "from_preset").__func__

        def from_preset(klass, preset, *args, _original=original, **kwargs):
            name = HUB_HANDLES.get(preset, preset)
            if isinstance(name, str) and name in RELEASED:
                preset = stand_ins.preset(kwargs.get("probe_layers"))
            return _original(klass, preset, *args, **kwargs)

        monkeypatch.setattr(cls, "from_preset", classmethod(from_preset))
    original_v2 = inspect.getattr_static(
        keras_aim.AIMv2Backbone, "from_preset"
    ).__func__

    def from_preset_v2(klass, preset, *args, **kwargs):
        if isinstance(preset, str):
            preset = stand_ins.v2_preset(preset) or preset
        return original_v2(klass, preset, *args, **kwargs)

    monkeypatch.setattr(
        keras_aim.AIMv2Backbone, "from_preset", classmethod(from_preset_v2)
    )
    original_lit = inspect.getattr_static(
        keras_aim.AIMv2LiT, "from_preset"
    ).__func__

    def from_preset_lit(klass, preset, *args, **kwargs):
        if isinstance(preset, str):
            preset = stand_ins.lit_preset(preset) or preset
        return original_lit(klass, preset, *args, **kwargs)

    monkeypatch.setattr(
        keras_aim.AIMv2LiT, "from_preset", classmethod(from_preset_lit)
    )


@pytest.fixture
def fast_compilation():
    """On jax, skips most XLA optimisations while the blocks run: the same
    results, compiled in a fraction of the time (these snippets compile far
    more than they compute)."""
    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def run_python_blocks(page, text, monkeypatch, stand_ins, workdir):
    """Runs the page's python blocks in order in one namespace."""
    use_stand_ins(monkeypatch, stand_ins)
    os.makedirs(workdir, exist_ok=True)
    monkeypatch.chdir(workdir)
    if HUB_FOLDER in text and not os.path.exists(HUB_FOLDER):
        os.symlink(stand_ins.hub_folder(), HUB_FOLDER)
    namespace = {"__name__": "__docs__"}
    backend = keras.backend.backend()
    ran = 0
    for language, options, line, code in code_blocks(text):
        if language not in PYTHON:
            continue
        unknown = set(options) - BACKENDS
        if unknown:
            raise DocsError(
                f"{page}:{line}: unknown python block option(s) "
                f"{sorted(unknown)}; allowed: backend names {sorted(BACKENDS)}"
            )
        if options and backend not in options:
            continue
        try:
            # Pad so that tracebacks show the page's own line numbers.
            exec(compile("\n" * (line - 1) + code, page, "exec"), namespace)
        except Exception as error:
            frames = traceback.extract_tb(error.__traceback__)
            where = [f.lineno for f in frames if f.filename == page]
            failing = where[-1] if where else line
            source = text.splitlines()[failing - 1].strip()
            raise DocsError(
                f"{page}:{failing}: the python block starting at line {line} "
                f"fails on {backend} at `{source}`: "
                f"{type(error).__name__}: {error}"
            ) from error
        ran += 1
    return ran


def _page_tier(page):
    """README's blocks on every backend in `make test`; each docs page once
    (on the backend its tagged blocks name, else the neutral one), and
    everywhere in `make test-all`: the pages cost 10-20 s each on jax."""
    if page == "README.md":
        return pytest.param(page)
    with open(os.path.join(ROOT, page)) as f:
        text = f.read()
    for backend in ("tensorflow", "torch", "jax"):
        if f"```python {backend}" in text:
            return pytest.param(page, marks=pytest.mark.large(backend=backend))
    return pytest.param(page, marks=pytest.mark.large)


@pytest.mark.parametrize("page", [_page_tier(p) for p in pages_with(PYTHON)])
def test_python_blocks_run(
    page, monkeypatch, stand_ins, tmp_path, fast_compilation
):
    run_python_blocks(page, read(page), monkeypatch, stand_ins, str(tmp_path))


# ---------------------------------------------------------------------------
# Checking shell commands against the Makefile and the scripts' flags.
# ---------------------------------------------------------------------------


@functools.cache
def makefile_targets():
    targets = set()
    for line in read("Makefile").splitlines():
        match = re.match(r"^([A-Za-z0-9_.\- ]+):(?!=)", line)
        if match:
            targets.update(match[1].split())
    return targets - {".PHONY"}


def _call_name(node):
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    if isinstance(node.func, ast.Name):
        return node.func.id
    return ""


def _local_module(name, directory):
    relative = name.replace(".", os.sep)
    for base in (directory, ROOT):
        for candidate in (
            os.path.join(base, relative + ".py"),
            os.path.join(base, relative, "__init__.py"),
        ):
            if os.path.isfile(candidate):
                inside = os.path.relpath(candidate, ROOT)
                if not inside.startswith(("keras_aim", "tests")):
                    return candidate
    return None


@functools.cache
def defined_flags(path):
    """`(flags, forwards_unknown)` of the script at `path` and its imports.

    `flags` is `None` when the script defines none (nothing to check).
    """
    flags, forwards, seen = set(), False, set()
    uses_absl = False
    files = [path]
    while files:
        file = files.pop()
        if file in seen:
            continue
        seen.add(file)
        with open(file) as f:
            source = f.read()
        forwards = forwards or "parse_known_args" in source
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = (
                    [node.module]
                    if isinstance(node, ast.ImportFrom) and node.module
                    else [a.name for a in node.names]
                )
                for name in names:
                    module = _local_module(name, os.path.dirname(file))
                    if module:
                        files.append(module)
            if not isinstance(node, ast.Call):
                continue
            call = _call_name(node)
            if call.startswith("DEFINE"):
                uses_absl = True
                args = list(node.args[:1]) + [
                    k.value for k in node.keywords if k.arg == "name"
                ]
                for arg in args:
                    if isinstance(arg, ast.Constant) and isinstance(
                        arg.value, str
                    ):
                        flags.add(arg.value)
                        if call in ("DEFINE_bool", "DEFINE_boolean"):
                            flags.add("no" + arg.value)
            elif call == "add_argument":
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and str(
                        arg.value
                    ).startswith("--"):
                        flags.add(arg.value[2:])
                flags.add("help")
    if "scaffold.Script(" in open(path).read():
        # Scripts on examples/scaffold.py declare their flags in a table:
        # ask the script itself.
        flags |= scaffold_flags(path)
        uses_absl = True
    if not flags:
        return None, forwards
    if uses_absl:
        flags |= ABSL_BUILTIN_FLAGS
    return frozenset(flags), forwards


def scaffold_flags(path):
    """The flag names a scaffold script defines (booleans also as --noX)."""
    from absl import flags as absl_flags

    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"{name}_docs_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = module.define_flags(absl_flags.FlagValues())
    names = set()
    for flag_name, flag in values._flags().items():
        names.add(flag_name)
        if isinstance(flag, absl_flags.BooleanFlag):
            names.add("no" + flag_name)
    return names


def _module_files(module):
    spec = importlib.util.find_spec(module)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        folder = list(spec.submodule_search_locations)[0]
        return sorted(glob.glob(os.path.join(folder, "*.py")))
    return [spec.origin]


def _check_flags(what, args, flags):
    problems = []
    for arg in args:
        if arg == "--":
            break
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0]
        if name not in flags:
            close = difflib.get_close_matches(name, sorted(flags), n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            problems.append(f"{what} has no flag --{name}{hint}")
    return problems


def _check_script(script, args):
    path = os.path.join(ROOT, script)
    if not os.path.isfile(path):
        return [f"{script} does not exist"]
    flags, forwards = defined_flags(path)
    if flags is None or forwards:
        return []
    return _check_flags(script, args, flags)


def _check_module(module, args):
    if module == "pytest":
        return [
            f"{a} does not exist"
            for a in args
            if a.startswith("tests")
            and not os.path.exists(os.path.join(ROOT, a.split("::")[0]))
        ]
    if module.startswith("keras_aim"):
        files = _module_files(module)
        if not files:
            return [f"module {module} does not exist"]
        flags = set()
        for file in files:
            found, _ = defined_flags(file)
            flags |= found or set()
        return _check_flags(f"python -m {module}", args, flags)
    return []


def check_command(tokens):
    """Problems with one shell command (a list of words), or `[]`."""
    while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
        tokens = tokens[1:]
    while tokens and tokens[0] in ("time", "env", "nohup"):
        tokens = tokens[1:]
    if not tokens:
        return []
    program, args = os.path.basename(tokens[0]), tokens[1:]
    if program == "make":
        targets = [a for a in args if not a.startswith("-") and "=" not in a]
        return [
            f"the Makefile has no target {t!r}"
            for t in targets
            if t not in makefile_targets()
        ]
    if re.fullmatch(r"python(3(\.\d+)?)?", program):
        if args[:1] == ["-m"] and len(args) > 1:
            return _check_module(args[1], args[2:])
        if args and args[0].endswith(".py"):
            return _check_script(args[0], args[1:])
        return []
    if program == "torchrun":
        scripts = [i for i, a in enumerate(args) if a.endswith(".py")]
        if scripts:
            return _check_script(args[scripts[0]], args[scripts[0] + 1 :])
        return []
    if program in ("bash", "sh") and args and not args[0].startswith("-"):
        if not os.path.exists(os.path.join(ROOT, args[0])):
            return [f"{args[0]} does not exist"]
    return []


def shell_commands(language, code):
    """`(line offset, words)` of every command in a shell block."""
    commands = []
    pending, first = "", None
    for offset, line in enumerate(code.splitlines()):
        if language == "console" and not pending:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if first is None:
            first = offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command, pending = pending + line, ""
        words = shlex.split(command, comments=True)
        part = []
        for word in [*words, "&&"]:
            if word in ("&&", "||", ";", "|"):
                if part:
                    commands.append((first, part))
                part = []
            else:
                part.append(word)
        first = None
    return commands


def check_shell_block(language, code):
    problems = []
    for offset, words in shell_commands(language, code):
        for problem in check_command([w for w in words if w != "..."]):
            problems.append((offset, problem))
    return problems


@pytest.mark.parametrize("page", pages_with(SHELL))
def test_shell_commands_exist(page):
    problems = []
    for language, _, line, code in blocks_of(page, SHELL):
        for offset, problem in check_shell_block(language, code):
            problems.append(f"{page}:{line + offset}: {problem}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------
# Languages, links and length.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_fence_languages_are_known(page):
    known = PYTHON | SHELL | NOT_RUN
    unknown = [
        f"{page}:{line}: ```{language}"
        for language, _, line, _ in code_blocks(read(page))
        if language not in known
    ]
    assert not unknown, f"unknown fence languages (known: {sorted(known)}):" + (
        "\n".join(["", *unknown])
    )


LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(page):
    """The page's text without its code blocks."""
    text = read(page)
    for _, _, _, code in code_blocks(text):
        text = text.replace(code, "")
    return text


def anchors(page):
    """GitHub's heading anchors of a page."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", prose(page), re.MULTILINE)
    }


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_exist(page):
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path))
        if path and not os.path.exists(full):
            broken.append(target)
        elif anchor and (not path or path.endswith(".md")):
            linked = os.path.relpath(full, ROOT) if path else page
            if anchor not in anchors(linked):
                broken.append(target)
    assert not broken, f"{page}: broken links {broken}"


def test_readme_stays_short():
    lines = len(read("README.md").splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; move detail into docs/ (at most "
        f"{README_MAX_LINES})."
    )


# ---------------------------------------------------------------------------
# The checks themselves can fail.
# ---------------------------------------------------------------------------


def test_a_misspelt_flag_is_caught():
    problems = check_shell_block(
        "bash",
        "python examples/probe.py --preset=runs/b \\\n    --probe_layer=last",
    )
    assert problems == [
        (
            0,
            "examples/probe.py has no flag --probe_layer (did you mean "
            "--probe_layers?)",
        )
    ]
    assert check_shell_block("bash", "python -m keras_aim.convert x --outpt y")
    assert check_shell_block("console", "$ make tset")
    assert check_shell_block("bash", "python examples/no_such_script.py")
    assert not check_shell_block(
        "bash", "KERAS_BACKEND=torch python examples/pretrain.py --noresume"
    )


def test_a_broken_python_block_is_caught(monkeypatch, stand_ins, tmp_path):
    page = (
        "```python\nimport keras_aim\n```\n\ntext\n\n"
        "```python\nkeras_aim.AIMBackbone(image_shape=(28, 28, 3), "
        "patch_size=4, hidden_dim=48, num_layers=3, num_head=2)\n```\n"
    )
    with pytest.raises(DocsError, match=r"page.md:8: .*num_head"):
        run_python_blocks(
            "page.md", page, monkeypatch, stand_ins, str(tmp_path)
        )


def test_unknown_languages_and_options_are_refused(
    monkeypatch, stand_ins, tmp_path
):
    assert code_blocks("```Python\nx = 1\n```\n")[0][0] == "python"
    with pytest.raises(DocsError, match="never closed"):
        code_blocks("```python\nx = 1\n")
    with pytest.raises(DocsError, match="unknown python block option"):
        run_python_blocks(
            "page.md",
            "```python jaxx\nx = 1\n```\n",
            monkeypatch,
            stand_ins,
            str(tmp_path),
        )


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
