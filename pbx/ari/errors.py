"""ARI's refusals as typed exceptions: one class per kind of HTTP error, each naming the
method, the path and Asterisk's own message, so a caller can tell "the caller hung up a
moment ago" (:class:`AriNotFound`) from "Asterisk is gone" (:class:`AriUnavailable`)."""

from __future__ import annotations

from typing import Any


class AriError(Exception):
    """ARI refused a request or could not be reached.

    ``status`` is the HTTP status (0 when Asterisk was not reached at all) and
    ``message`` is Asterisk's own explanation, e.g. "Channel not in Stasis application".
    """

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.message = message
        super().__init__(f"ARI {method} {path} -> {status}: {message}")


class AriBadRequest(AriError):
    """400: a parameter is wrong or names something that does not exist (e.g. a channel
    given to addChannel)."""


class AriUnauthorized(AriError):
    """401/403: the ARI user or password is wrong, or the user is read-only."""


class AriNotFound(AriError):
    """404: the channel, bridge, playback or recording in the path does not exist (often:
    the caller hung up a moment ago)."""


class AriConflict(AriError):
    """409: the object is in the wrong state, e.g. a bridge not in Stasis, a channel that
    is recording, a duplicate id."""


class AriUnprocessable(AriError):
    """422: the channel is not in a Stasis application (yet, or any more)."""


class AriServerError(AriError):
    """500 and other 5xx: Asterisk failed or refused to do it (e.g. a dangerous function
    read with live_dangerously=no, or a channel allocation failure)."""


class AriUnavailable(AriError):
    """Asterisk could not be reached or did not answer in time (status 0)."""


_ERRORS: dict[int, type[AriError]] = {
    400: AriBadRequest,
    401: AriUnauthorized,
    403: AriUnauthorized,
    404: AriNotFound,
    409: AriConflict,
    422: AriUnprocessable,
}


def error_for(status: int, method: str, path: str, body: Any, reason: str = "") -> AriError:
    """The typed error for an HTTP error status and Asterisk's error body."""
    if isinstance(body, dict):
        # Most ARI errors say {"message": ...}; a few (channel allocation) say {"error": ...}.
        message = str(body.get("message") or body.get("error") or body)
    else:
        message = str(body or reason or "no explanation from Asterisk")
    kind = _ERRORS.get(status, AriServerError if status >= 500 else AriError)
    return kind(status, method, path, message)
