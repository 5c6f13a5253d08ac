"""The housekeeper: deletes rows that have outlived their use.

Every ``housekeeping_interval`` seconds (docs/operations.md, "Housekeeping"):

- ``used_jtis``: replay-cache entries past their expiry (a JWT that old is
  refused for its ``exp`` anyway);
- ``push_outbox``: sent, failed and dropped push messages older than
  ``push_outbox_retention``;
- ``client_notifications``: sent, failed and given-up ping and push notifications
  older than ``notification_retention`` (their sealed values are long erased);
- ``user_code_failures``: wrong user codes older than the window they count in;
- ``enrolment_codes``: codes that expired more than a day ago, spent or not;
- ``webauthn_challenges``: WebAuthn registration challenges past their expiry.

Deletes run in batches of at most :data:`BATCH` rows, one statement each, so
no round holds many locks; a round goes on while batches come back full.
Replicas may run rounds at the same time: each statement deletes rows once.
Nothing here touches the audit trail, requests or tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from backchannel.db.client_notifications import delete_settled_notifications
from backchannel.db.enrolments import delete_stale_enrolment_codes
from backchannel.db.jtis import delete_expired_jtis
from backchannel.db.pool import ConnectionPool
from backchannel.db.push_outbox import delete_settled_messages
from backchannel.db.user_codes import delete_old_user_code_failures
from backchannel.db.webauthn import delete_stale_challenges
from backchannel.periodic import Periodic
from backchannel.settings import Settings

log = logging.getLogger(__name__)

BATCH = 5000
ENROLMENT_CODE_RETENTION = 86400  # seconds after a code's expiry


class Housekeeper(Periodic):
    name = "housekeeper"

    def __init__(self, pool: ConnectionPool, settings: Settings) -> None:
        super().__init__(interval=settings.housekeeping_interval)
        self._pool = pool
        self._settings = settings

    async def purge_once(self) -> dict[str, int]:
        """One round: how many rows each purge deleted."""
        pool, retention = self._pool, self._settings.push_outbox_retention
        purges: dict[str, Callable[[], Awaitable[int]]] = {
            "used_jtis": lambda: delete_expired_jtis(pool, limit=BATCH),
            "push_outbox": lambda: delete_settled_messages(pool, older_than=retention, limit=BATCH),
            "client_notifications": lambda: delete_settled_notifications(
                pool, older_than=self._settings.notification_retention, limit=BATCH
            ),
            "user_code_failures": lambda: delete_old_user_code_failures(
                pool, older_than=self._settings.user_code_failure_window, limit=BATCH
            ),
            "enrolment_codes": lambda: delete_stale_enrolment_codes(
                pool, older_than=ENROLMENT_CODE_RETENTION, limit=BATCH
            ),
            "webauthn_challenges": lambda: delete_stale_challenges(pool, limit=BATCH),
        }
        deleted: dict[str, int] = {}
        for table, purge in purges.items():
            total = 0
            while True:
                count = await purge()
                total += count
                if count < BATCH:
                    break
            deleted[table] = total
        return deleted

    async def run_round(self) -> None:
        deleted = await self.purge_once()
        if any(deleted.values()):
            log.info("housekeeping deleted %s", deleted)
