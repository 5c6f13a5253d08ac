# placeholder: replaced by the real KeyStore
from __future__ import annotations

from typing import Any


class KeyStore:
    @classmethod
    async def load(cls, pool: Any, settings: Any) -> KeyStore:
        return cls()

    def on_config_event(self, payload: str) -> None:
        pass
