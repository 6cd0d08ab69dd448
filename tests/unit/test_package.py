from __future__ import annotations

import importlib
import sysconfig
from pathlib import Path


def test_stdlib_operator_is_not_shadowed_by_the_source_root() -> None:
    # The project root (holding the operator/ source root) is on sys.path here.
    stdlib_operator = importlib.import_module("operator")

    assert Path(stdlib_operator.__file__ or "").parent == Path(sysconfig.get_paths()["stdlib"])
    taskmaster = importlib.import_module("taskmaster")
    assert Path(taskmaster.__file__ or "").parent.parent.name == "operator"
