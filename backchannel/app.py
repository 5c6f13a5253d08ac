"""The application factory: ``create_app(settings)`` returns a Starlette app.

The lifespan owns every long-lived resource: the connection pool, the aiohttp
client session, the LISTEN connection, key and client caches, and background
workers. Nothing lives in module globals.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator

import aiohttp
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from backchannel.audit.sealer import AuditSealer
from backchannel.authenticator.prompts import compose_prompt
from backchannel.db.auth_requests import PollVerdict
from backchannel.db.client_notifications import NOTIFICATION_CHANNEL
from backchannel.db.listener import CONFIG_CHANNEL, DECISION_CHANNEL, PgListener
from backchannel.db.migrate import pending_migrations
from backchannel.db.pool import create_pool
from backchannel.db.push_outbox import OUTBOX_CHANNEL
from backchannel.db.service_secrets import ensure_service_secret
from backchannel.delivery.notification_worker import NotificationWorker
from backchannel.delivery.vapid import ensure_vapid_key
from backchannel.delivery.worker import OutboxWorker
from backchannel.endpoints.gateway import ServiceApp
from backchannel.endpoints.health import HEALTH_PATHS
from backchannel.endpoints.routes import DIRECT_PATHS, routes
from backchannel.errors import (
    DATABASE_UNAVAILABLE,
    UNSTORABLE_INPUT,
    OAuthError,
    render_client_gone,
    render_http_error,
    render_oauth_error,
    render_unavailable,
    render_unexpected_error,
    render_unstorable_input,
)
from backchannel.housekeeping import Housekeeper
from backchannel.key_wrapping import KeyWrapper
from backchannel.oauth.client_certificates import ClientCertificateAuthorities
from backchannel.oauth.client_registry import ClientRegistry
from backchannel.oauth.dpop import DPoPNonces
from backchannel.oauth.keys import KeyStore
from backchannel.oauth.long_poll import DecisionWaiters
from backchannel.oauth.push_delivery import mint_push_tokens
from backchannel.oauth.sender_constraint import DPOP_NONCE_SECRET
from backchannel.oauth.services import Services
from backchannel.observability.metrics import Metrics
from backchannel.policy.store import PolicyStore
from backchannel.settings import Settings
from backchannel.url_guard import PublicOnlyResolver

log = logging.getLogger(__name__)


class MigrationsPending(RuntimeError):
    pass


def create_app(settings: Settings) -> Starlette:
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url")
    dsn = settings.database_url
    metrics = Metrics(poll_verdicts=PollVerdict)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Every resource is released in reverse order, also when a later one fails to start.
        async with contextlib.AsyncExitStack() as stack:
            pool = await create_pool(
                dsn,
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
                acquire_timeout=settings.db_acquire_timeout,
                command_timeout=settings.db_statement_timeout,
            )
            stack.push_async_callback(pool.close)
            async with pool.acquire() as conn:
                pending = await pending_migrations(conn)
            if pending:
                raise MigrationsPending(
                    f"database has unapplied migrations ({', '.join(pending)}); "
                    "run `backchannel migrate` first"
                )
            http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=settings.http_timeout),
                headers={"User-Agent": "backchannel"},
                # Outbound URLs come from outside: connect only to public addresses.
                connector=aiohttp.TCPConnector(
                    resolver=PublicOnlyResolver(allow_insecure=settings.allow_insecure_urls)
                ),
            )
            stack.push_async_callback(http.close)
            keys = await KeyStore.load(pool, settings)
            stack.push_async_callback(keys.close)
            clients = ClientRegistry(pool)
            waiters = DecisionWaiters()
            listener = PgListener(dsn)
            stack.push_async_callback(listener.close)
            listener.subscribe(DECISION_CHANNEL, waiters.wake_hex)
            listener.subscribe(CONFIG_CHANNEL, clients.on_config_event)
            listener.subscribe(CONFIG_CHANNEL, keys.on_config_event)
            policy = await PolicyStore.load(pool)
            listener.subscribe(CONFIG_CHANNEL, policy.on_config_event)
            listener.on_reconnect(policy.invalidate)
            listener.on_reconnect(waiters.wake_all)
            listener.on_reconnect(clients.invalidate)
            listener.on_reconnect(keys.schedule_reload)
            wrapper = KeyWrapper.from_settings(settings)
            await ensure_vapid_key(pool, wrapper)
            nonce_key = await ensure_service_secret(pool, DPOP_NONCE_SECRET)
            authorities = (
                ClientCertificateAuthorities.from_file(settings.tls_client_ca_file)
                if settings.tls_client_ca_file is not None
                else None
            )
            services = Services(
                settings=settings,
                pool=pool,
                http=http,
                clients=clients,
                keys=keys,
                waiters=waiters,
                listener=listener,
                policy=policy,
                prompts=compose_prompt,
                wrapper=wrapper,
                dpop_nonces=DPoPNonces(nonce_key),
                client_authorities=authorities,
                metrics=metrics,
            )
            outbox = OutboxWorker(
                pool, http, settings, metrics=metrics, poll_interval=settings.delivery_poll_interval
            )
            listener.subscribe(OUTBOX_CHANNEL, lambda _payload: outbox.wake())
            listener.on_reconnect(outbox.wake)
            notifier = NotificationWorker(
                pool,
                http,
                settings,
                mint=functools.partial(mint_push_tokens, services),
                wrapper=wrapper,
                metrics=metrics,
                poll_interval=settings.delivery_poll_interval,
            )
            # Subscribed before the listener starts: it LISTENs on the channels it has then.
            listener.subscribe(NOTIFICATION_CHANNEL, lambda _payload: notifier.wake())
            listener.on_reconnect(notifier.wake)
            await listener.start()  # LISTENs on every channel subscribed above
            for worker in (outbox, notifier, AuditSealer(pool), Housekeeper(pool, settings)):
                await worker.start()
                stack.push_async_callback(worker.stop)
            stack.callback(waiters.release_all)  # held long polls are answered first
            app.state.services = services
            yield

    return ServiceApp(
        metrics,
        log_requests=settings.access_log,
        quiet_paths=HEALTH_PATHS,
        routes=routes(),
        direct_paths=DIRECT_PATHS,
        lifespan=lifespan,
        exception_handlers={
            OAuthError: render_oauth_error,
            ClientDisconnect: render_client_gone,
            HTTPException: render_http_error,
            **dict.fromkeys(DATABASE_UNAVAILABLE, render_unavailable),
            **dict.fromkeys(UNSTORABLE_INPUT, render_unstorable_input),
            Exception: render_unexpected_error,
        },
    )
