"""The flags of the example scripts: `Flag`, and the table of the flags
several scripts share (`SHARED`), with their bounds.

`scaffold.py` (which re-exports these names) turns them into absl flags.
Numbers are checked when the flags are parsed, before any work: an
integer within its bounds (at least 0 and below 2**31 unless the flag
says otherwise), a float finite and within its bounds (at least 0 unless
it says otherwise), each element of a list of numbers likewise, a string
against its pattern (`--mesh`). No Keras here: `--help` stays fast.
"""

import dataclasses
import math
import re

from absl import flags

# The flags defined here belong to the script that asks for them (listed
# by its --help), not to this module.
flags.disclaim_key_flags()

# The bounds of an integer flag that sets none: a count or a size.
MIN_INTEGER = 0
MAX_INTEGER = 2**31 - 1
MESH_PATTERN = r"[1-9][0-9]{0,4}[xX][1-9][0-9]{0,4}"
MAX_BATCH = 2**20
MAX_EPOCHS = 10**6
MAX_LEARNING_RATE = 10.0
MAX_PREVIEW = 256
# keras_aim.utils.validation.SIZE_LIMITS (far beyond any AIM), copied so
# that --help and a bad flag never import Keras; a test keeps them equal.
LIMITS = {
    "hidden_dim": 65536,
    "num_layers": 4096,
    "patch_size": 1024,
    "num_heads": 4096,
    "image_side": 8192,
}


def _shown(number):
    return str(number) if isinstance(number, int) else f"{number:g}"


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
        minimum, maximum: inclusive bounds of a number (or of each element
            of a list of numbers), checked when the flags are parsed. An
            integer without them is in `[MIN_INTEGER, MAX_INTEGER]`, a
            float without a minimum is at least 0.
        positive: a number must be > 0.
        default: the default; unset, it is `run`'s (or `Script`'s
            `defaults`).
        element: `"integer"` or `"float"`: a `"list"` of such numbers.
        pattern: a regular expression a `"string"` must match whole;
            `pattern_help` says what that is.
    """

    name: str
    kind: str
    help: str
    values: tuple = ()
    minimum: float = None
    maximum: float = None
    positive: bool = False
    default: object = _FROM_RUN
    element: str = None
    pattern: str = None
    pattern_help: str = None

    def bounds(self):
        """`(minimum, maximum)` of a number or number list, defaults
        applied; `(None, None)` for other flags."""
        number = self.element or self.kind
        if number not in ("integer", "float"):
            return None, None
        minimum, maximum = self.minimum, self.maximum
        if minimum is None:
            minimum = MIN_INTEGER if number == "integer" else 0.0
        if maximum is None and number == "integer":
            maximum = MAX_INTEGER
        return minimum, maximum

    def check(self, value):
        """`None` if `value` (a parsed flag value) is allowed, else why not."""
        if value is None:
            return None
        number = self.element or self.kind
        values = value if self.kind == "list" else [value]
        if self.pattern is not None and self.kind == "string":
            if not re.fullmatch(self.pattern, value):
                return f"must be {self.pattern_help or self.pattern}"
        if number not in ("integer", "float"):
            return None
        minimum, maximum = self.bounds()
        for item in values:
            if self.kind == "list":
                try:
                    item = (int if number == "integer" else float)(item)
                except ValueError:
                    return f"takes comma-separated {number}s; got {item!r}"
            if number == "float" and not math.isfinite(item):
                return "must be a finite number (not nan or inf)"
            if self.positive and not item > 0:
                return f"must be positive; got {item}"
            if item < minimum or (maximum is not None and item > maximum):
                low = "(" if self.positive else "["
                low += _shown(minimum)
                top = ", inf)" if maximum is None else f", {_shown(maximum)}]"
                return f"must be in {low}{top}; got {item}"
        return None

    def define(self, flag_values, default):
        kwargs = {"flag_values": flag_values}
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
        # One validator for bounds, finiteness and patterns: absl's bounds
        # let nan through (every comparison with nan is false) and inf
        # pass a lower bound, and it has no bounds for list elements.
        flags.register_validator(
            self.name, self._validate, flag_values=flag_values
        )

    def _validate(self, value):
        problem = self.check(value)
        if problem is not None:
            raise flags.ValidationError(problem)
        return True


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
        Flag(
            "seed",
            "integer",
            "Seed of the weights and data.",
            minimum=0,
            maximum=2**32 - 1,  # NumPy's seeds
        ),
        Flag(
            "batch_size",
            "integer",
            "Examples per step.",
            minimum=1,
            maximum=MAX_BATCH,
        ),
        Flag(
            "epochs",
            "integer",
            "Passes over the training split.",
            minimum=1,
            maximum=MAX_EPOCHS,
        ),
        Flag("steps", "integer", "Optimizer steps of a run.", minimum=1),
        Flag(
            "learning_rate",
            "float",
            "Peak learning rate (AdamW).",
            positive=True,
            maximum=MAX_LEARNING_RATE,
        ),
        Flag(
            "weight_decay",
            "float",
            "AdamW weight decay.",
            minimum=0.0,
            maximum=1.0,
        ),
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
            pattern=r"\s*(best|last|\d+(\s*,\s*\d+)*)\s*",
            pattern_help="best, last or comma-separated 0-based block indices",
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
            maximum=LIMITS["image_side"],
        ),
        Flag(
            "hidden_dim",
            "integer",
            "Trunk width.",
            minimum=1,
            maximum=LIMITS["hidden_dim"],
        ),
        Flag(
            "num_layers",
            "integer",
            "Trunk blocks.",
            minimum=1,
            maximum=LIMITS["num_layers"],
        ),
        Flag(
            "num_heads",
            "integer",
            "Attention heads.",
            minimum=1,
            maximum=LIMITS["num_heads"],
        ),
        Flag(
            "patch_size",
            "integer",
            "Patch side in pixels.",
            minimum=1,
            maximum=LIMITS["patch_size"],
        ),
        Flag(
            "head_hidden_dim",
            "integer",
            "Pixel-head width.",
            minimum=1,
            maximum=LIMITS["hidden_dim"],
        ),
        Flag(
            "head_num_layers",
            "integer",
            "Pixel-head blocks (0: a linear head).",
            minimum=0,
            maximum=LIMITS["num_layers"],
        ),
        Flag(
            "probe_epochs",
            "integer",
            "Epochs of each probe.",
            minimum=1,
            maximum=MAX_EPOCHS,
        ),
        Flag(
            "probe_learning_rate",
            "float",
            "Peak learning rate of the probes.",
            positive=True,
            maximum=MAX_LEARNING_RATE,
        ),
        Flag(
            "lora_rank",
            "integer",
            "LoRA rank; 0 = full fine-tuning.",
            minimum=0,
            maximum=LIMITS["hidden_dim"],
        ),
        Flag(
            "checkpoint_every",
            "integer",
            "Steps between checkpoints.",
            minimum=1,
        ),
        Flag("log_every", "integer", "Steps per log row.", minimum=1),
        Flag("keep_checkpoints", "integer", "Checkpoints to keep.", minimum=1),
        Flag(
            "num_preview",
            "integer",
            "Held-out images in the preview grid (0: none).",
            minimum=0,
            maximum=MAX_PREVIEW,
        ),
        Flag(
            "verbose",
            "integer",
            "1: progress bar; 2: a line per epoch; 0: quiet.",
            minimum=0,
            maximum=2,
        ),
        Flag(
            "mesh",
            "string",
            "BATCHxMODEL device mesh, e.g. 2x4.",
            pattern=MESH_PATTERN,
            pattern_help="BATCHxMODEL, two positive integers (e.g. 2x4)",
        ),
    )
}


def flag(name, kind=None, help=None, **changes):
    """A flag: `SHARED[name]` with `changes`, or a new one (give `kind`
    and `help`). `changes` are `Flag` fields: `values`, `minimum`,
    `maximum`, `positive`, `default`, `element`, `pattern`."""
    if kind is not None:
        changes["kind"] = kind
    if help is not None:
        changes["help"] = help
    if name in SHARED:
        return dataclasses.replace(SHARED[name], **changes)
    if "kind" not in changes or "help" not in changes:
        raise ValueError(f"--{name} is not shared: give its kind and help.")
    return Flag(name, **changes)
