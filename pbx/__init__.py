"""Talking to Asterisk: finding and running it, ARI, AMI and the media legs.

Nothing in this package knows about agents, cards or handoff rules; ``handoff``
builds on it and ``web`` on both.
"""
