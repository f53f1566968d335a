"""The ``wandbfs`` command and the mount(8) helper; each command's logic in its module."""
