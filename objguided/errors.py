"""Errors the harness raises for bad input: each names the file (or key) and the fix."""


class ObjguidedError(Exception):
    """Base class: the CLI prints these as one clear line, without a traceback."""


class DataError(ObjguidedError, ValueError):
    """An input file is unreadable, inconsistent or not where it should be."""


class ConfigError(ObjguidedError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""
