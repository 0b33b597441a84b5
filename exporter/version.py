"""The one place the version lives: pyproject.toml, ``--version`` and build_info all read it."""

__version__ = "0.1.0"
