"""A script of the repository's app folders (``eval/``, ``scripts/``: folders of scripts, not packages) as a
module, so that one script can use another's functions and the tests can call them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(path: str | Path) -> ModuleType:
    """The script at ``path`` as the module ``llava_ov_<folder>_<name>`` (``eval/summarize.py`` →
    ``llava_ov_eval_summarize``), loaded once: every caller, the scripts and the tests, gets the same
    module object."""
    path = Path(path)
    name = f"llava_ov_{path.parent.name}_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
