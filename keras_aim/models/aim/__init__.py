"""The AIM family (El-Nouby et al., ICML 2024): backbone, image classifier
(attentive probe), pre-trainer, image converter, presets and layout map.

Import the classes from `keras_aim` (`keras_aim.AIMBackbone`, ...); this
package's `__init__` stays empty so that the preset table and layout rules
can be read without importing the models."""
