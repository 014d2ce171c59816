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

Exit codes: 0 done; 2 (`EXIT_BAD_SETTINGS`) with one `ERROR: ...` line on
stderr for a bad flag, a stray argument or a `ValueError`,
`FileNotFoundError` or `ImportError` raised by `run`; a `ScriptError`'s
own code (pre-training: 3 when the loss diverged); whatever `report`
returns (pre-training: 128 + the signal that stopped it).

keras_aim (and so Keras) is imported inside the scripts' functions only,
so that `--help` and a bad flag stay fast.
"""

import contextlib
import dataclasses
import inspect
import math
import sys
import time

from absl import flags

# The flags this module defines belong to the script that asks for them
# (listed by its --help), not to the scaffold.
flags.disclaim_key_flags()

EXIT_BAD_SETTINGS = 2
EXIT_DIVERGED = 3


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


_FROM_RUN = object()  # the default of `run`'s parameter of the same name


@dataclasses.dataclass(frozen=True)
class Flag:
    """One absl flag.

    Attributes:
        name: the flag, and the name of `run`'s keyword argument.
        kind: `"string"`, `"integer"`, `"float"`, `"bool"`, `"enum"` or
            `"list"` (comma-separated strings).
        help: the `--help` line.
        values: the choices of an `"enum"`.
        minimum, maximum: inclusive bounds of a number, checked when the
            flags are parsed.
        positive: a number must be > 0.
        default: the default; unset, it is `run`'s (or `Script`'s
            `defaults`).
    """

    name: str
    kind: str
    help: str
    values: tuple = ()
    minimum: float = None
    maximum: float = None
    positive: bool = False
    default: object = _FROM_RUN

    def define(self, flag_values, default):
        kwargs = {"flag_values": flag_values}
        if self.minimum is not None:
            kwargs["lower_bound"] = self.minimum
        if self.maximum is not None:
            kwargs["upper_bound"] = self.maximum
        if self.kind == "enum":
            flags.DEFINE_enum(
                self.name, default, list(self.values), self.help, **kwargs
            )
        else:
            define = {
                "string": flags.DEFINE_string,
                "integer": flags.DEFINE_integer,
                "float": flags.DEFINE_float,
                "bool": flags.DEFINE_bool,
                "list": flags.DEFINE_list,
            }[self.kind]
            define(self.name, default, self.help, **kwargs)
        if self.kind == "float":
            # absl's bounds let nan through (every comparison with nan is
            # false), and inf passes a lower bound: a float flag must be a
            # finite number before any work starts.
            flags.register_validator(
                self.name,
                lambda value: value is None or math.isfinite(value),
                message="must be a finite number (not nan or inf)",
                flag_values=flag_values,
            )
        if self.positive:
            flags.register_validator(
                self.name,
                lambda value: value is None or value > 0,
                message="must be positive",
                flag_values=flag_values,
            )


# The flags several scripts share: one definition each. `flag(name, ...)`
# takes one as it is, or with its own help, default or bounds.
SHARED = {
    f.name: f
    for f in (
        Flag("preset", "string", "Preset name, Keras preset or hub folder."),
        Flag(
            "dataset",
            "string",
            "digits, photos (built in), tfds:NAME[:SPLIT] or an image folder.",
        ),
        Flag("output_dir", "string", "Where to write the results (created)."),
        Flag("seed", "integer", "Seed of the weights and data.", minimum=0),
        Flag("batch_size", "integer", "Examples per step.", minimum=1),
        Flag("epochs", "integer", "Passes over the training split.", minimum=1),
        Flag("steps", "integer", "Optimizer steps of a run.", minimum=1),
        Flag(
            "learning_rate",
            "float",
            "Peak learning rate (AdamW).",
            positive=True,
        ),
        Flag("weight_decay", "float", "AdamW weight decay.", minimum=0.0),
        Flag(
            "probe",
            "enum",
            "Probe head.",
            values=("attentive", "linear"),
        ),
        Flag(
            "probe_layers",
            "string",
            "best, last or comma-separated 0-based blocks (default: best for "
            "the released sizes, else last).",
        ),
        Flag(
            "split",
            "enum",
            "Split to read (auto: test, or all of a folder without splits).",
            values=("auto", "train", "test", "all"),
        ),
        Flag(
            "image_size",
            "integer",
            "Image side; default: the data source's own (16 digits, 32 "
            "photos, 224 otherwise: keras_aim.data.DEFAULT_IMAGE_SIZES).",
            minimum=1,
        ),
        Flag("hidden_dim", "integer", "Trunk width.", minimum=1),
        Flag("num_layers", "integer", "Trunk blocks.", minimum=1),
        Flag("num_heads", "integer", "Attention heads.", minimum=1),
        Flag("patch_size", "integer", "Patch side in pixels.", minimum=1),
        Flag("head_hidden_dim", "integer", "Pixel-head width.", minimum=1),
        Flag(
            "head_num_layers",
            "integer",
            "Pixel-head blocks (0: a linear head).",
            minimum=0,
        ),
        Flag("probe_epochs", "integer", "Epochs of each probe.", minimum=1),
        Flag(
            "probe_learning_rate",
            "float",
            "Peak learning rate of the probes.",
            positive=True,
        ),
    )
}


def flag(name, kind=None, help=None, **changes):
    """A flag: `SHARED[name]` with `changes`, or a new one (give `kind`
    and `help`). `changes` are `Flag` fields: `values`, `minimum`,
    `maximum`, `positive`, `default`."""
    if kind is not None:
        changes["kind"] = kind
    if help is not None:
        changes["help"] = help
    if name in SHARED:
        return dataclasses.replace(SHARED[name], **changes)
    if "kind" not in changes or "help" not in changes:
        raise ValueError(f"--{name} is not shared: give its kind and help.")
    return Flag(name, **changes)


def settings(defaults, overrides):
    """`defaults` updated with `overrides`; unknown names are a ValueError."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"Unknown settings {unknown}; known: {list(defaults)}")
    return {**defaults, **overrides}


@contextlib.contextmanager
def run_folder(path, lock=True):
    """Creates `--output_dir` and holds its run lock inside the block.

    An unwritable folder, or one another run holds, fails here, before
    anything slow (a `ValueError`). `lock=False` (a data-parallel worker,
    whose chief holds the lock) only creates the folder.
    """
    from keras_aim import training

    output_dir = training.prepare_output_dir(path)
    if not lock:
        yield output_dir
        return
    with training.RunLock(output_dir):
        yield output_dir


def fail(error, exit_code=EXIT_BAD_SETTINGS):
    """Prints `ERROR: <error>` as one line on stderr and exits."""
    message = " ".join(str(error).split())
    if sys.stdout.isatty():
        print(flush=True)  # past a progress bar
    print(f"ERROR: {message}", file=sys.stderr)
    sys.exit(exit_code)


def parse(flag_values, argv):
    """Parses `argv` (`argv[0]` is the program); a bad flag exits 2."""
    try:
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
        exit_code = self.report(result, kwargs) if self.report else None
        print(f"Wall time {time.time() - begin:.0f} s.")
        if exit_code:
            sys.exit(exit_code)
        return result
