"""How SDK exceptions map to the mount's error kinds (``sdk/client._classify``): the kind
decides the errno a reader sees, so a wrong mapping is a wrong answer."""

from __future__ import annotations

from wandbfs.sdk.client import BackendError, Denied, NotFound, _classify


def _raised_from(outer: Exception, inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException as e:
            raise outer from e
    except Exception as wrapped:
        return wrapped


def test_permission_denied_wrapped_by_the_sdk_is_denied():
    e = _raised_from(ValueError("Failed to load registry 'secret'"), Exception("permission denied"))
    assert isinstance(_classify(e), Denied)
    assert isinstance(_classify(Exception('{"extensions": {"code": "PERMISSION_ERROR"}}')), Denied)


def test_a_local_permission_error_in_the_chain_is_not_w_and_b_refusing_the_key():
    local = PermissionError(13, "Permission denied", "/root/.netrc")
    kind = _classify(_raised_from(RuntimeError("reading the settings failed"), local))
    assert not isinstance(kind, Denied) and isinstance(kind, BackendError)


def test_failed_to_load_alone_is_not_found():
    assert isinstance(_classify(ValueError("Failed to load registry 'nothing'")), NotFound)
