"""The parser every ``sona`` command uses: each option's help shows its default.

``argparse.ArgumentDefaultsHelpFormatter`` appends ``(default: X)``; this one leaves it out
where it would say nothing or repeat the help (a default of ``None`` or ``False``, a help that
names its default already). Subcommand parsers are made of the same class, so every command,
including ones added later, gets it.
"""

from __future__ import annotations

import argparse

__all__ = ["DefaultsFormatter", "SonaArgumentParser"]


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default is None
            or default is False
            or default == argparse.SUPPRESS  # --help, --version
            or "default" in text.lower()
            or not action.option_strings
        ):
            return action.help
        return super()._get_help_string(action)


class SonaArgumentParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
