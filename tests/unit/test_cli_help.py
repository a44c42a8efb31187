"""Every command's --help is complete: each option has a help text, no reStructuredText
markup leaks into what a user reads, and `framesink local` names the ports it can fix."""

from __future__ import annotations

import argparse

from framesink.cli import build_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    return dict(sub.choices)


def test_every_option_of_every_command_says_what_it_does():
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, parser in subcommands().items() for action in parser._actions  # noqa: SLF001
               if not isinstance(action, argparse._HelpAction) and action.help is None]  # noqa: SLF001
    assert missing == []


def test_help_texts_carry_no_restructuredtext_markup():
    leaked = [name for name, parser in subcommands().items() if "``" in parser.format_help()]
    assert leaked == []


def test_local_can_fix_every_port_it_opens():
    text = subcommands()["local"].format_help()
    assert all(option in text for option in ("--port", "--moto-port", "--webhook-port"))
