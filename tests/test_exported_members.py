"""The public facade lists exactly what it exports, and each export reports `orchestrator`."""

from __future__ import annotations

import orchestrator


def test_all_is_complete_without_duplicates() -> None:
    assert len(orchestrator.__all__) == len(set(orchestrator.__all__))
    public = {n for n in dir(orchestrator) if not n.startswith("_")}
    submodules = {"hookspecs", "testing", "plugins", "graphs", "runtimes"}
    assert public - submodules - {"annotations"} == set(orchestrator.__all__)


def test_exports_report_the_public_module() -> None:
    for name in orchestrator.__all__:
        obj = getattr(orchestrator, name)
        if isinstance(obj, type):
            assert obj.__module__ == "orchestrator", name
