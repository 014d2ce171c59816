"""The AIMv2 family (Fini et al., 2024): the vision backbone, its presets
and layout map.

Import the classes from `keras_aim` (`keras_aim.AIMv2Backbone`); this
package's `__init__` stays empty so that the preset table and layout rules
can be read without importing the models."""
