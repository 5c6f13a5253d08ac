"""Properties of ``requested_wait``: any Prefer header gives a wait within the limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backchannel.endpoints.token import requested_wait

limits = st.integers(0, 60)
preference_text = st.text(max_size=40) | st.lists(
    st.sampled_from(
        ["wait", "WAIT", "=", ",", ";", " ", '"', "5", "0", "99999999", "respond-async"]
    ),
    max_size=10,
).map("".join)


@given(st.none() | preference_text, limits)
def test_any_prefer_header_gives_a_wait_between_zero_and_the_limit(
    prefer: str | None, limit: int
) -> None:
    assert 0 <= requested_wait(prefer, limit) <= limit


@given(st.integers(0, 10**12), st.integers(0, 8), limits)
def test_wait_n_reads_as_n_capped_at_the_limit(seconds: int, zeros: int, limit: int) -> None:
    written = "0" * zeros + str(seconds)
    assert requested_wait(f"wait={written}", limit) == min(seconds, limit)


@given(st.integers(0, 100), limits, st.sampled_from(["respond-async, ", "handling=lenient; ", ""]))
def test_wait_is_found_among_other_preferences(seconds: int, limit: int, before: str) -> None:
    for header in (
        f"{before}wait={seconds}",
        f'{before}Wait="{seconds}"',
        f"{before}WAIT = {seconds}",
    ):
        assert requested_wait(header, limit) == min(seconds, limit), header


@given(preference_text.filter(lambda text: "wait" not in text.lower()), limits)
def test_without_a_wait_preference_there_is_no_wait(prefer: str, limit: int) -> None:
    assert requested_wait(prefer, limit) == 0
