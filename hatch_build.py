"""Wheel build hook: place analysis/, converters/ and cli.py inside the installed `adderconv` package."""
from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MOVED = {"analysis": "adderconv/analysis", "converters": "adderconv/converters", "cli.py": "adderconv/cli.py"}


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        # An editable install must not copy them (the copies would go stale); adderconv/__init__.py finds
        # them in the source tree instead.
        if version != "editable":
            build_data["force_include"].update(MOVED)
