"""Old module paths of keras_aim 0.1, kept for one release as aliases.

The package moved to family and role folders (`models/aim/`, `utils/`,
`convert/`, ...). `import keras_aim.presets` and the like still work: a
meta-path finder maps each old name to its new module, with a
`DeprecationWarning` that names the new path. Python has no built-in module
alias, and a file per old name would keep the clutter the move removed.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

OLD_TO_NEW = {
    "keras_aim.presets": "keras_aim.models.aim.aim_presets",
    "keras_aim.preset_utils": "keras_aim.utils.preset_utils",
    "keras_aim.preprocessing": "keras_aim.models.aim.aim_image_converter",
    "keras_aim.validation": "keras_aim.utils.validation",
    "keras_aim.io_utils": "keras_aim.utils.io_utils",
    "keras_aim.plots": "keras_aim.utils.plots",
    "keras_aim.orders": "keras_aim.layers.token_orders",
    "keras_aim.torch_adamw": "keras_aim.optimizers.torch_adamw",
    "keras_aim.repeated_probe": "keras_aim.probing.repeated",
    "keras_aim.conversion": "keras_aim.convert",
    "keras_aim.conversion.readers": "keras_aim.convert.readers",
    "keras_aim.conversion.released": "keras_aim.convert.released_aim",
    "keras_aim.conversion.loader": "keras_aim.convert.loaders",
    "keras_aim.models.classifier": "keras_aim.models.aim.aim_image_classifier",
    "keras_aim.models.pretrainer": "keras_aim.models.aim.aim_pretrainer",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new_name):
        self.new_name = new_name

    def create_module(self, spec):
        warnings.warn(
            f"`{spec.name}` is deprecated; import `{self.new_name}` instead.",
            DeprecationWarning,
            stacklevel=3,
        )
        return importlib.import_module(self.new_name)

    def exec_module(self, module):
        pass  # the target module is already executed


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        new_name = OLD_TO_NEW.get(name)
        if new_name is None:
            return None
        return importlib.util.spec_from_loader(name, _AliasLoader(new_name))


def install():
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
