"""The ``wandbfs`` command line."""

from __future__ import annotations

import click

from .emulator.cli import emulator_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wandbfs")
def main() -> None:
    """wandbfs: the W&B Registry as a read-only filesystem."""


main.add_command(emulator_group)

if __name__ == "__main__":
    main()
