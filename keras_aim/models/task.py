"""The base of every keras_aim task (a backbone with a head): presets and
the layout map. A task names its backbone class in `backbone_cls` and lists
the constructor arguments that its saved weights depend on in
`preset_weight_args`, so that a preset refuses overrides that do not fit.
"""

from keras_aim.distribution import layout
from keras_aim.models.base import PresetMixin


class Task(PresetMixin):
    """Presets and the layout map, shared by the tasks."""

    backbone_cls = None
    nested_config_objects = ("backbone",)

    get_layout_map = staticmethod(layout.get_layout_map)

    @classmethod
    def _from_loader(cls, loader, load_weights, **kwargs):
        return loader.load_task(cls, load_weights, **kwargs)
