"""The tests' SIP desk phone: web.bench.sip_phone (the fault soak makes one vanish too,
and product code never imports tests), its messages web.bench.sip_message's."""

from web.bench.sip_message import SipError, SipMessage, _build, _sdp, digest_authorization
from web.bench.sip_phone import AUTO_ANSWER, Dialog, SipPhone

__all__ = ["AUTO_ANSWER", "Dialog", "SipError", "SipMessage", "SipPhone", "_build", "_sdp",
           "digest_authorization"]
