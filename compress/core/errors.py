"""Errors that the CLI turns into one clear line and exit code 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a recipe, a data folder, a model file, a flag.

    The message is one line naming the file, the key path, the bad value and what is allowed.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        parts = [p for p in (file, key) if p]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class RecipeError(UserError):
    """A recipe (YAML file or --set override) is invalid."""


class DataError(UserError):
    """A dataset folder or annotation file is missing or malformed."""


class ModelFileError(UserError):
    """A checkpoint, mask or ONNX file cannot be used."""
