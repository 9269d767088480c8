"""The ``promptsep`` command line. Each subcommand is a thin function over the library.

Command modules expose ``register(commands, train_commands)`` which adds their parsers; every
parser sets ``func`` to a callable taking the parsed namespace.
"""

from __future__ import annotations

import argparse
import sys

from encoders.errors import PromptsepError


def build_parser() -> argparse.ArgumentParser:
    from app import cmd_codec, cmd_data, cmd_embed, cmd_judge, cmd_refine, cmd_separate, demo

    parser = argparse.ArgumentParser(
        prog="promptsep",
        description="Isolate any sound in a recording from a text, picture or video prompt, and judge the result.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    train = commands.add_parser("train", help="train a component of the model bundle")
    train_commands = train.add_subparsers(dest="component", metavar="COMPONENT")
    train_commands.required = True
    for module in (cmd_data, cmd_separate, cmd_refine, cmd_codec, cmd_embed, cmd_judge, demo):
        module.register(commands, train_commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except PromptsepError as error:
        print(f"promptsep: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("promptsep: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
