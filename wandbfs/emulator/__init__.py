"""A local stand-in for the W&B API that the unmodified wandb SDK talks to.

``Emulator`` (server.py) is the in-process API; ``wandbfs emulator serve`` the command.
"""

from wandbfs.emulator.server import Emulator

__all__ = ["Emulator"]
