"""Errors of the managed local server, in one leaf module.

Every other module of the package raises some of them, and the CLI catches them without
importing the modules that do the work.
"""

from __future__ import annotations

__all__ = ["ModelError", "ServerStartError", "SetupError", "UnknownModelError"]


class SetupError(RuntimeError):
    """A step of preparing the server venv or a model failed."""


class ModelError(SetupError):
    """A model could not be found, verified or converted."""


class UnknownModelError(ModelError, ValueError):
    """A model name is neither bundled nor an existing local folder."""


class ServerStartError(RuntimeError):
    """The vLLM process died or did not become healthy in time."""
