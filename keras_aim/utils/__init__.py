"""Shared utilities: preset loading and saving (`preset_utils`), argument
checks (`validation`), crash-safe writes (`io_utils`) and figures
(`plots`). Nothing here imports the models."""
