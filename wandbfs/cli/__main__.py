"""``python -m wandbfs.cli``: the ``wandbfs`` command."""

from wandbfs.cli.main import main

main()
