"""The scaffold every example script stands on: flags, entry points, exits.

A script declares its flags once, as a `Script` around its `run` function:

    SCRIPT = scaffold.Script(
        run,
        scaffold.flag("preset"),  # a shared flag (`SHARED`) as it is
        scaffold.flag("epochs", help="Passes over the data."),  # own help
        scaffold.flag("pool", "enum", "Pooling.", values=("none", "mean")),
        report=print_result,  # prints the result; may return an exit code
    )
    main = SCRIPT.main  # in-process: main(["--pool=max"]) exits 2
    define_flags = SCRIPT.define_flags  # into a given `flags.FlagValues`

    if __name__ == "__main__":
        SCRIPT.cli()  # absl's app.run on the global FLAGS

Each flag's default is the default of `run`'s parameter of the same name
(or of the `defaults` mapping given to `Script`), and every flag's value
goes to `run` by name, so neither is written twice. Flags are defined only
when asked (`define_flags`), never at import; `main` defines them into a
fresh `FlagValues`, so a test can call it again and again in one process.

The flags, their bounds and the table of shared ones are in
`flag_table.py` (re-exported here): every number is checked when the
flags are parsed, before any work.

A script's `run` that writes into `--output_dir` is wrapped by
`writes({name: kind})`: the folder is created, locked for the whole run
(`keras_aim.training.RunLock`: a second run into it exits 2) and checked
before any work: a file where the run writes a folder (or the reverse),
a FIFO, a broken link, a preset folder holding foreign files.

Exit codes: 0 done; 2 (`EXIT_BAD_SETTINGS`) with one `ERROR: ...` line on
stderr for a bad flag, a stray argument or a `ValueError`,
`FileNotFoundError` or `ImportError` raised by `run`; 3 (`EXIT_DIVERGED`)
when training diverged (`keras_aim.training.TrainingDivergedError`: a
NaN or infinite loss; no result is written); a `ScriptError`'s own code;
whatever `report` returns (pre-training: 128 + the signal that stopped
it).

keras_aim (and so Keras) is imported inside the scripts' functions only,
so that `--help` and a bad flag stay fast.
"""

import contextlib
import functools
import importlib.util
import inspect
import os
import stat
import sys
import time

from absl import flags
from flag_table import _FROM_RUN
from flag_table import MAX_INTEGER  # noqa: F401 (re-exported)
from flag_table import SHARED  # noqa: F401 (re-exported)
from flag_table import Flag  # noqa: F401 (re-exported)
from flag_table import flag  # noqa: F401 (re-exported)

# The flags this module defines belong to the script that asks for them
# (listed by its --help), not to the scaffold.
flags.disclaim_key_flags()

EXIT_BAD_SETTINGS = 2
EXIT_DIVERGED = 3


def _set_tensorflow_switches():
    """`keras_aim.utils.tensorflow_cpu`'s switch, before any script runs
    TensorFlow.

    Loaded by its path: importing `keras_aim` here would load Keras (and
    TensorFlow) and slow `--help`.
    """
    spec = importlib.util.find_spec("keras_aim")
    if spec is None or not spec.submodule_search_locations:
        return
    path = os.path.join(
        spec.submodule_search_locations[0], "utils", "tensorflow_cpu.py"
    )
    module_spec = importlib.util.spec_from_file_location(
        "_keras_aim_tensorflow_cpu", path
    )
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    module.one_op_at_a_time()


_set_tensorflow_switches()


def default_image_size(source):
    """The image side `keras_aim.data` reads `source` at: defined once, in
    `keras_aim.data.common` (imported here, not at import, to keep --help
    fast)."""
    from keras_aim.data.common import default_image_size as size

    return size(source)


class ScriptError(Exception):
    """Bad input or a failed run that exits with `exit_code` and one line."""

    def __init__(self, message, exit_code=EXIT_BAD_SETTINGS):
        super().__init__(message)
        self.exit_code = exit_code


def settings(defaults, overrides):
    """`defaults` updated with `overrides`; unknown names are a ValueError."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"Unknown settings {unknown}; known: {list(defaults)}")
    return {**defaults, **overrides}


@contextlib.contextmanager
def run_folder(path, lock=True, outputs=None):
    """Creates `--output_dir` and holds its run lock inside the block.

    An unwritable folder, one another run holds, or one where something
    already sits in the way of `outputs` (`{name: "file" | "folder" |
    "preset"}`, see `keras_aim.training.check_outputs`) fails here, before
    anything slow (a `ValueError`). `lock=False` (a data-parallel worker,
    whose chief holds the lock) only creates the folder.
    """
    from keras_aim import training

    output_dir = training.prepare_output_dir(path)
    if not lock:
        yield output_dir
        return
    with training.RunLock(output_dir):
        training.check_outputs(output_dir, outputs or {})
        yield output_dir


def writes(outputs):
    """Decorates a script's `run(..., output_dir=...)`: the whole call runs
    inside `run_folder(output_dir, outputs=outputs)` (created, locked,
    checked before any work), called from the command line or not."""

    def decorate(run):
        signature = inspect.signature(run)

        @functools.wraps(run)
        def locked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with run_folder(bound.arguments["output_dir"], outputs=outputs):
                return run(*args, **kwargs)

        locked.outputs = dict(outputs)
        return locked

    return decorate


def fail(error, exit_code=EXIT_BAD_SETTINGS):
    """Prints `ERROR: <error>` as one line on stderr and exits."""
    message = " ".join(str(error).split())
    if sys.stdout.isatty():
        print(flush=True)  # past a progress bar
    print(f"ERROR: {message}", file=sys.stderr)
    sys.exit(exit_code)


# absl reads `--flagfile=PATH` whole (and nested ones): a FIFO would hang
# it, `/dev/zero` fill the memory. Flag files are small regular files.
MAX_FLAGFILE_BYTES = 1024**2


def _flag_files(args):
    """The paths of the `--flagfile` directives in `args`."""
    paths = []
    for index, arg in enumerate(args):
        name, equals, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or name != "flagfile":
            continue
        if not equals and index + 1 < len(args):
            value = args[index + 1]
        paths.append(os.path.expanduser(value.strip().strip("'\"")))
    return paths


def check_flag_files(args, depth=0):
    """Refuses a `--flagfile` (or a nested one) that is not a small
    regular file, before absl reads it."""
    for path in _flag_files(args):
        if not path:
            continue
        try:
            info = os.stat(path)
        except OSError as error:
            raise flags.Error(
                f"--flagfile={path}: {error.strerror or error}"
            ) from None
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FLAGFILE_BYTES:
            raise flags.Error(
                f"--flagfile={path} must be a regular file of at most "
                f"{MAX_FLAGFILE_BYTES} bytes (a FIFO or a device would never "
                "end)."
            )
        if depth < 8:
            with open(path, errors="replace") as f:
                lines = [line.strip() for line in f]
            check_flag_files(lines, depth + 1)


def parse(flag_values, argv):
    """Parses `argv` (`argv[0]` is the program); a bad flag exits 2."""
    try:
        check_flag_files(argv[1:])
        return flag_values(argv)
    except flags.Error as error:
        fail(error)


def terminal_verbose():
    """`run(verbose=...)`: a progress bar on a terminal, else a line per
    epoch (no carriage returns in a log file)."""
    return {"verbose": 1 if sys.stdout.isatty() else 2}


def _quiet_logging(flag_values):
    """absl at WARNING (a quiet backend start-up) unless --verbosity."""
    from absl import logging

    if "verbosity" in flag_values and flag_values["verbosity"].present:
        return
    logging.set_verbosity(logging.WARNING)


class Script:
    """An example's command line: its flags, `run` and `report`.

    Args:
        run: the script's function; it gets every flag by name.
        *flags: the `Flag`s, in `--help` order.
        report: `report(result, kwargs)` prints the result of `run`; what
            it returns (an int) is the exit code.
        defaults: the flags' defaults by name, for a `run(**settings)`;
            unset, the defaults of `run`'s parameters.
        extra: returns keyword arguments of `run` that are not flags,
            when it runs (e.g. `terminal_verbose`).
    """

    def __init__(self, run, *flags, report=None, defaults=None, extra=None):
        self.run = run
        self.flags = flags
        self.names = [f.name for f in flags]
        self.report = report
        self.extra = extra
        parameters = inspect.signature(run).parameters
        takes_any = any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        )
        self.defaults = {}
        for item in flags:
            if not takes_any and item.name not in parameters:
                raise TypeError(f"{run.__name__}() takes no {item.name!r}.")
            default = item.default
            if default is _FROM_RUN and defaults is not None:
                default = defaults.get(item.name)
            if default is _FROM_RUN:
                parameter = parameters.get(item.name)
                default = None
                if parameter is not None and parameter.default is not (
                    inspect.Parameter.empty
                ):
                    default = parameter.default
            if item.kind == "list" and isinstance(default, tuple):
                default = [str(v) for v in default]
            self.defaults[item.name] = default

    def define_flags(self, flag_values=None):
        """Defines the flags into `flag_values` (the global FLAGS if None);
        returns it."""
        flag_values = flags.FLAGS if flag_values is None else flag_values
        for item in self.flags:
            item.define(flag_values, self.defaults[item.name])
        return flag_values

    def main(self, args=None):
        """Runs the script in-process on `args` (the arguments after the
        program name; default `sys.argv[1:]`); returns `run`'s result.

        The flags live in a fresh `FlagValues` (absl's own --helpfull and
        --verbosity are the real command line's): calling it again, or for
        another script, defines nothing twice. Exits as the command does.
        """
        args = sys.argv[1:] if args is None else list(args)
        flag_values = self.define_flags(flags.FlagValues())
        rest = parse(flag_values, [self.run.__module__, *args])
        return self.execute(flag_values, rest)

    def cli(self):
        """The real command line: absl's `app.run` on the global FLAGS."""
        from absl import app

        flag_values = self.define_flags(flags.FLAGS)

        def main(argv):
            self.execute(flag_values, argv)

        app.run(main, flags_parser=lambda argv: parse(flag_values, argv))

    def execute(self, flag_values, argv):
        """Runs `run` on parsed flags (`argv`: the program and leftovers)."""
        begin = time.time()
        try:
            if len(argv) > 1:
                raise ValueError(f"Unexpected arguments: {argv[1:]}")
            _quiet_logging(flag_values)
            kwargs = {name: flag_values[name].value for name in self.names}
            if self.extra is not None:
                kwargs.update(self.extra())
            result = self.run(**kwargs)
        except ScriptError as error:
            fail(error, error.exit_code)
        except (ValueError, FileNotFoundError, ImportError) as error:
            fail(error)
        except RuntimeError as error:
            from keras_aim.utils.errors import TrainingDivergedError

            if not isinstance(error, TrainingDivergedError):
                raise
            fail(error, EXIT_DIVERGED)
        exit_code = self.report(result, kwargs) if self.report else None
        print(f"Wall time {time.time() - begin:.0f} s.")
        if exit_code:
            sys.exit(exit_code)
        return result
