"""The test desk phone's TCP framing: SIP messages cut out of a byte stream by their
Content-Length, whatever the chunks the connection delivers."""

from __future__ import annotations

from web.bench.sip_message import MessageStream, SipMessage, _build


def test_a_stream_gives_whole_messages_across_chunks_and_skips_keep_alives() -> None:
    invite = _build("INVITE sip:desk-bea@192.0.2.50:5060;transport=tcp SIP/2.0",
                    [("Call-ID", "a1"), ("CSeq", "1 INVITE")], "v=0\r\n")
    bye = _build("BYE sip:desk-bea@192.0.2.50:5060;transport=tcp SIP/2.0",
                 [("Call-ID", "a1"), ("CSeq", "2 BYE")])
    wire = b"\r\n\r\n" + invite + bye + b"\r\n\r\n"  # CRLF keep-alives around them
    stream = MessageStream()
    got: list[bytes] = []
    for cut in range(0, len(wire), 7):  # seven bytes at a time: splits every part
        got += stream.feed(wire[cut:cut + 7])
    assert got == [invite, bye]
    assert SipMessage.parse(got[0]).body == b"v=0\r\n"
    # Two messages in one chunk come out as two.
    assert MessageStream().feed(bye + invite) == [bye, invite]
