"""A thin, typed asyncio client for the Asterisk REST Interface (ARI), on aiohttp.

Two halves share one :class:`AriClient`:

- REST: :meth:`AriClient.request` and typed helpers grouped by resource
  (``client.channels``, ``client.bridges``, ``client.playbacks``, ``client.recordings``,
  ``client.applications``, ``client.asterisk``). An HTTP error becomes a typed
  :class:`AriError` that names the method, the path and Asterisk's own message.
- Events: one WebSocket to ``/ari/events`` for one or more Stasis apps, kept up by a
  supervised loop with capped, jittered backoff. Asterisk does not queue events while
  nobody listens and channels stay parked in Stasis, so after every (re)connect the
  ``on_connect`` hook runs (the controller reconciles its calls there) before the
  client reports itself ready and before any new event is dispatched.

Events go through a dispatch table by type. Events with the same key (by default the
channel, so one call leg's StasisStart, ChannelStateChange, ... StasisEnd) are handled
in arrival order by one worker; different channels are handled concurrently. A failing
handler is logged and counted, never fatal.

The package, by module:

- :mod:`pbx.ari.client`: :class:`AriClient` (REST requests and the event stream);
- :mod:`pbx.ari.resources`: the REST resource groups and the parameters they take;
- :mod:`pbx.ari.models`: ARI's objects and events as types, the events' ordering key;
- :mod:`pbx.ari.errors`: :class:`AriError` and its subclasses, one per kind of refusal.

The event machinery (dispatcher, link supervision, the reconnect loop) is
:mod:`pbx.event_link`, shared with :mod:`pbx.ami`. Loggers are children of ``pbx.ari``.
"""

from pbx.ari.client import AriClient, basic_auth_header
from pbx.ari.errors import (
    AriBadRequest,
    AriConflict,
    AriError,
    AriNotFound,
    AriServerError,
    AriUnauthorized,
    AriUnavailable,
    AriUnprocessable,
    error_for,
)
from pbx.ari.models import (
    Application,
    AsteriskInfo,
    Bridge,
    Channel,
    Event,
    EventHandler,
    LiveRecording,
    Playback,
    describe_event,
    event_key,
)

__all__ = [
    "Application",
    "AriBadRequest",
    "AriClient",
    "AriConflict",
    "AriError",
    "AriNotFound",
    "AriServerError",
    "AriUnauthorized",
    "AriUnavailable",
    "AriUnprocessable",
    "AsteriskInfo",
    "Bridge",
    "Channel",
    "Event",
    "EventHandler",
    "LiveRecording",
    "Playback",
    "basic_auth_header",
    "describe_event",
    "error_for",
    "event_key",
]
