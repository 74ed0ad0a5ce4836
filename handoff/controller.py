"""The live-call services wired together, once: the product and every test rig build
them here, so a rig cannot drift from what the product runs.

The call control owns the inbound calls; supervision and call-backs have legs of their
own in the same Stasis app, so they are registered with its reconciliation (their legs
are left alone, and call-backs are adopted after a restart); every (re)connect of the
event stream reconciles before new commands are taken.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path

from handoff.ari_api import AriApi
from handoff.callback import Callbacks
from handoff.events import EventHub
from handoff.live import AiEngine, CallControl, Timing
from handoff.live.engines import REJECT, Engines
from handoff.live.legs import Phones
from handoff.outbound import Outbound
from handoff.store import Store
from handoff.supervision import Supervision
from pbx.spool import SoundFolder, Spool


@dataclass
class LiveServices:
    ari: AriApi
    control: CallControl
    supervision: Supervision
    callbacks: Callbacks

    async def close(self) -> None:
        """Supervision and call-backs first (they end their own legs), then the calls'
        background work. Asterisk and its calls stay up: a restart adopts them."""
        await self.supervision.close()
        await self.callbacks.close()
        await self.control.close()


def build_controller(
    ari: AriApi,
    store: Store,
    hub: EventHub,
    builtin: AiEngine | None = None,
    *,
    unknown_numbers: str = REJECT,
    app: str = "switchboard",
    outbound: Outbound | None = None,
    recordings: Path | None = None,
    spool: Spool | None = None,
    timing: Timing | None = None,
    supervisor_ring_timeout_s: int = 30,
    callback_ring_timeout_s: int = 30,
    zone: tzinfo | None = None,
    sounds: SoundFolder | None = None,
    open_lines: bool = True,
    call_limit: int = 0,
    on_refused: Callable[[str], None] | None = None,
    phones: Phones | None = None,
) -> LiveServices:
    """The call control, supervision and call-backs on one ARI client (not started).


    ``builtin`` takes the calls of assistants whose engine is the built-in one; every
    other assistant's engine is its AudioSocket address in the store. A call to a number
    no enabled assistant answers goes to the assistant ``unknown_numbers`` names, or is
    refused ("reject"). Calls out (fallback numbers, call-backs) go through
    ``outbound``'s trunks; without it every call out is refused. Business hours are read
    in ``zone`` (desk.time_zone; None: the server's own). A number's menu prompt is spoken
into ``sounds`` (None: a beep, when this host cannot write Asterisk's folders).
    ``open_lines``: browser-phone agents get an open line while on duty (False: every
    Accept rings their phone).
    Past ``call_limit`` calls at once (0: no limit) a new caller is refused as congestion;
    ``on_refused`` hears of every caller refused, with why. ``phones``: how agents'
    phones are rung (None: each at its PJSIP endpoint).
    """
    engines = Engines(store, builtin, unknown_numbers, zone=zone)
    outbound = outbound or Outbound(store)
    control = CallControl(ari, store, hub, engines, app=app, outbound=outbound,
                          recordings=recordings, spool=spool, timing=timing,
                          sounds=sounds, open_lines=open_lines, call_limit=call_limit,
                          on_refused=on_refused, phones=phones)
    supervision = Supervision(control, ring_timeout_s=supervisor_ring_timeout_s)
    callbacks = Callbacks(ari, store, outbound=outbound, app=app,
                          ring_timeout_s=callback_ring_timeout_s, recordings=recordings,
                          spool=spool, events=hub, after_call=control.wrap_up,
                          phones=control.phones, lines=control.lines)
    control.leave_alone(callbacks.owned, adopt=callbacks.adopt)
    ari.on_connect = control.reconcile
    return LiveServices(ari, control, supervision, callbacks)
