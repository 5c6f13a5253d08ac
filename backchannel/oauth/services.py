"""The running app's shared resources, handed to endpoints and the protocol layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from backchannel.db.pool import ConnectionPool
from backchannel.key_wrapping import KeyWrapper
from backchannel.observability.metrics import Metrics
from backchannel.settings import Settings

if TYPE_CHECKING:
    from backchannel.db.listener import PgListener
    from backchannel.oauth.client_registry import ClientRegistry
    from backchannel.oauth.device_prompt import PromptComposer
    from backchannel.oauth.keys import KeyStore
    from backchannel.oauth.long_poll import DecisionWaiters
    from backchannel.policy.store import PolicyStore


@dataclass
class Services:
    """One instance per running app, stored on ``app.state.services``."""

    settings: Settings
    pool: ConnectionPool
    http: aiohttp.ClientSession
    clients: ClientRegistry
    keys: KeyStore
    waiters: DecisionWaiters
    listener: PgListener
    policy: PolicyStore
    prompts: PromptComposer  # how a new request reaches the user's devices
    wrapper: KeyWrapper  # seals what is stored to be sent back (notification tokens)
    metrics: Metrics = field(default_factory=Metrics)
    # Set when shutdown begins: /readyz answers 503 from then on (endpoints/health.py).
    draining: bool = False
