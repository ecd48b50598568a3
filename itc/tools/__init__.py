"""Built-in tools for tool-calling nodes: a calculator, a Python runner, a document search,
and `ToolsConfig`, which names them in a pipeline file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from itc._lazy import lazy_exports

_EXPORTS = {
    "ToolsConfig": "itc.tools.config",
    "calculate": "itc.tools.calculator",
    "calculator_tool": "itc.tools.calculator",
    "python_tool": "itc.tools.python_runner",
    "document_search_tool": "itc.tools.document_search",
}
__all__ = [
    "ToolsConfig",
    "calculate",
    "calculator_tool",
    "document_search_tool",
    "python_tool",
]

if TYPE_CHECKING:
    from itc.tools.calculator import calculate, calculator_tool
    from itc.tools.config import ToolsConfig
    from itc.tools.document_search import document_search_tool
    from itc.tools.python_runner import python_tool
else:
    __getattr__ = lazy_exports("itc.tools", _EXPORTS)
