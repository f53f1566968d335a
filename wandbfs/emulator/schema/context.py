"""What every resolver needs besides the store: URL building and the caller's base URL."""

from __future__ import annotations

from typing import Any, Callable

from wandbfs.emulator.executor import Node
from wandbfs.emulator.store import Store
from wandbfs.emulator.signing import UrlSigner


FEATURES_ON = {
    "LARGE_FILENAMES", "ARTIFACT_TAGS", "CLIENT_IDS", "ARTIFACT_REGISTRY_SEARCH",
    "ARTIFACT_COLLECTION_MEMBERSHIP_FILES", "ARTIFACT_COLLECTION_MEMBERSHIP_FILE_DOWNLOAD_HANDLER",
    "USE_ARTIFACT_WITH_ENTITY_AND_PROJECT_INFORMATION", "INCLUDE_ARTIFACT_TYPES_IN_REGISTRY_CREATION",
    "PROJECT_ARTIFACT_COLLECTION_MEMBERSHIP", "ARTIFACT_MEMBERSHIP_IN_LINK_ARTIFACT_RESPONSE",
    "TOTAL_COUNT_IN_FILE_CONNECTION", "ARTIFACT_V2_DOWNLOAD_HANDLER_SUPPORTS_ARTIFACT_ID",
    "ARTIFACT_DIGEST_ALGORITHM", "MARK_RUN_FILES_UPLOADED",
    "ARTIFACT_COLLECTIONS_FILTERING_SORTING",  # filters and order on collection lists (paging.py)
}


# Which resolver type shows a store record (Project -> ProjectNode, ...). Filled once at import
# by ``@shows``; the resolver modules reach each other's types through ``Ctx.node`` instead of
# importing each other (a project lists collections, a collection names its project).
_SHOWN_BY: dict[type, Callable[..., Node]] = {}


def shows(record: type) -> Callable[[type], type]:
    """Class decorator: this Node type is how a ``record`` looks through GraphQL."""
    def register(cls: type) -> type:
        _SHOWN_BY[record] = cls
        return cls
    return register


class Ctx:
    """What resolvers need besides the store: URL building and the caller's base URL."""

    def __init__(self, store: Store, signer: UrlSigner, base_url: str) -> None:
        self.store = store
        self.signer = signer
        self.base_url = base_url

    def node(self, record: Any, *args: Any) -> Node:
        """The resolver object for a store record (``args`` as that type's constructor takes)."""
        return _SHOWN_BY[type(record)](self, record, *args)

    def blob_url(self, md5_hex: str) -> str:
        return self.signer.sign(self.base_url, f"/_storage/blobs/{md5_hex}")

    def manifest_url(self, md5_hex: str) -> str:
        return self.signer.sign(self.base_url, f"/_storage/manifests/{md5_hex}")

    def upload_url(self, kind: str, key: str) -> str:
        return self.signer.sign(self.base_url, f"/_storage/upload/{kind}/{key}")
