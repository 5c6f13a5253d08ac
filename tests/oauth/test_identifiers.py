"""Random identifiers operators type: device ids and generated client ids."""

from __future__ import annotations

import re

from backchannel.oauth.secrets import new_identifier


def test_identifiers_never_start_with_a_dash_and_keep_128_bits() -> None:
    # A leading "-" made argparse read `device remove -xyz…` as an option (1 id in 64).
    values = {new_identifier() for _ in range(5000)}
    assert len(values) == 5000
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", v) for v in values)
