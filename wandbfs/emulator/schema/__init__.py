"""Resolver objects: how the emulator's Store looks through W&B's GraphQL types.

Each class is one W&B GraphQL type; fields are methods ``f_<field>(**args)``, and anything
a query selects that no method serves is reported as missing by the executor. One module
per family of types: ``orgs`` (organizations, users, entities, projects, registries),
``artifacts`` (collections, memberships, aliases, versions, files), ``runs``, the two roots
``query`` and ``mutations``; ``paging`` holds connections and filters, ``context`` what
every resolver is handed.
"""

from wandbfs.emulator.schema.context import Ctx
from wandbfs.emulator.schema.mutations import MutationRoot
from wandbfs.emulator.schema.query import QueryRoot

__all__ = ["Ctx", "MutationRoot", "QueryRoot"]
