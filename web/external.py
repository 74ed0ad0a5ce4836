"""The PBX's configuration for an Asterisk Switchboard does not start (asterisk.source =
its ARI URL).

One function builds that configuration (:func:`pbx_spec`; with the store's directory,
web.telephony.external_spec), for both `switchboard config render` (the files an
operator puts in front of the Asterisk before it first starts) and the running product
(which writes them again into asterisk.config_dir whenever people, numbers, trunks or
blocks change, and has Asterisk reload them): the two cannot disagree.

Secrets come from the environment only, never from a settings file:
``SWITCHBOARD_ARI_PASSWORD`` (or the password in asterisk.source's URL) and
``SWITCHBOARD_AMI_SECRET``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from handoff.settings import Settings, SettingsError
from pbx.asterisk_config import (
    Dirs,
    InboundRoute,
    InstanceSpec,
    Ports,
    SipAgent,
    TlsListener,
    rtp_ports_for,
)
from pbx.external import split_ari_url
from pbx.trunk_config import SipTrunk

ARI_PASSWORD_ENV = "SWITCHBOARD_ARI_PASSWORD"
AMI_SECRET_ENV = "SWITCHBOARD_AMI_SECRET"
DEFAULT_USER = "switchboard"


@dataclass(frozen=True)
class Credentials:
    """The ARI and AMI accounts the rendered ari.conf and manager.conf hold (one user
    name for both, as the embedded PBX has)."""

    user: str
    ari_password: str
    ami_secret: str


def credentials(settings: Settings, environ: Mapping[str, str] | None = None) -> Credentials:
    """From the environment (and asterisk.source's URL, for its user and, if it holds
    one, the ARI password); a missing secret is named."""
    env = os.environ if environ is None else environ
    user, password = DEFAULT_USER, ""
    if settings.asterisk.external:
        _, _, user, password = split_ari_url(settings.asterisk.source)
        user = user or DEFAULT_USER
    password = env.get(ARI_PASSWORD_ENV, "") or password
    if not password:
        raise SettingsError(f"{ARI_PASSWORD_ENV} must be set (the ARI password of the "
                            "Asterisk Switchboard does not start)")
    secret = env.get(AMI_SECRET_ENV, "")
    if not secret:
        raise SettingsError(f"{AMI_SECRET_ENV} must be set (the AMI secret of the "
                            "Asterisk Switchboard does not start)")
    return Credentials(user, password, secret)


def external_dirs(settings: Settings) -> Dirs:
    ast = settings.asterisk
    return Dirs(root=ast.state_dir, modules=ast.modules_dir, data=ast.share_dir,
                etc_dir=ast.etc_dir)


def pbx_spec(
    settings: Settings, dirs: Dirs, account: Credentials, *,
    routes: tuple[InboundRoute, ...] = (), agents: tuple[SipAgent, ...] = (),
    trunks: tuple[SipTrunk, ...] | None = None, blocked: tuple[str, ...] = (),
    route_unknown: bool = True,
) -> InstanceSpec:
    """The PBX as the settings describe it, on the ports they name (the defaults of a
    stand-alone Asterisk where they say 0: there is no free port to pick on another
    host), with the directory given (None trunks: the settings file's)."""
    ast = settings.asterisk
    certificate = settings.pbx_certificate
    return InstanceSpec(
        name="pbx",
        dirs=dirs,
        ports=Ports(
            http=ast.http_port or 8088,
            sip=ast.sip_port or 5060,
            ami=ast.ami_port or 5038,
            rtp_start=ast.rtp_start or 20000,
            rtp_end=ast.rtp_end or (ast.rtp_start or 20000) + rtp_ports_for(ast.call_limit) - 1,
        ),
        max_calls=ast.call_limit,
        ari_user=account.user,
        ari_password=account.ari_password,
        ami_user=account.user,
        ami_secret=account.ami_secret,
        bind_address=ast.bind_address,
        media_address=ast.media_address,
        sip_realm=ast.sip_realm,
        country=ast.country,
        peers=settings.cluster.peers(),
        # Paths as that Asterisk sees them (its certificate, on its host).
        tls=(TlsListener(*certificate, port=ast.tls_port or 8089)
             if certificate is not None else None),
        trunks=tuple(t.trunk().sip() for t in settings.trunks) if trunks is None else trunks,
        routes=routes,
        agents=agents,
        blocked=blocked,
        route_unknown=route_unknown,
        # A cluster node refuses calls its controller is not there for (the edge
        # sends them on).
        refuse_without_app=bool(settings.cluster.node),
        agents_edge=settings.cluster.phones_edge,
        browsers_at_edge=bool(settings.cluster.browsers_edge),
    )
