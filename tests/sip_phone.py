"""The tests' SIP desk phone: web.bench.sip_phone (the fault soak makes one vanish too,
and product code never imports tests)."""

from web.bench.sip_phone import (
    AUTO_ANSWER,
    Dialog,
    SipError,
    SipMessage,
    SipPhone,
    _build,
    _sdp,
    digest_authorization,
)

__all__ = ["AUTO_ANSWER", "Dialog", "SipError", "SipMessage", "SipPhone", "_build", "_sdp",
           "digest_authorization"]
