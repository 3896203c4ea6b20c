"""The exceptions modelprint raises on bad input: one line, naming what was wrong and where."""


class ModelprintError(Exception):
    """Base class; the CLI prints these as a single line instead of a traceback."""


class ConfigError(ModelprintError, ValueError):
    """A name, expression or option that cannot be resolved."""


class FileFormatError(ModelprintError):
    """A file that is corrupt, truncated, tampered with, or not of the kind expected."""


class ModelFileError(FileFormatError):
    """A model file that is corrupt, truncated, tampered with or of an unknown kind."""


class UnsafeFileError(ModelFileError):
    """A file whose loading would execute code (a pickle with Python objects)."""


class DataError(ModelprintError):
    """A dataset that cannot be loaded or is malformed."""


class BudgetExceededError(ModelprintError):
    """A query would exceed the model's query budget."""


class AccessError(ModelprintError):
    """An output the model does not expose (e.g. probabilities from a hard-label API)."""
