"""Properties of the launch parameter rules, over generated parameter lists."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from gateway.errors import BadRequest
from gateway.flows.launch import elfproef, parse_parameters

NAMES = st.sampled_from(["userId", "clientId", "bsn", "view", "ts", "nonce", "sig", "x", "USERID"])
VALUES = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[A-Za-z0-9._@-]{1,70}", fullmatch=True),
    st.from_regex(r"[0-9]{9}", fullmatch=True),
)
PAIRS = st.lists(st.tuples(NAMES, VALUES), max_size=8)
RULE = re.compile(r"[A-Za-z0-9._@-]{1,64}")
DETAIL = re.compile(r"De parameter '([^']*)' (ontbreekt|is ongeldig|komt meer dan één keer voor)\.")


@settings(max_examples=500, deadline=None)
@given(PAIRS)
def test_parse_accepts_only_valid(pairs: list[tuple[str, str]]) -> None:
    values = MultiDict(pairs)
    try:
        params = parse_parameters(values)
    except BadRequest as error:
        # The page names the parameter and never repeats a value.
        match = DETAIL.fullmatch(error.detail)
        assert error.status == 400
        assert match is not None, error.detail
        assert match.group(1) in {name for name, _ in pairs} | {"userId"}
        return

    names = [name for name, _ in pairs]
    assert all(names.count(name) == 1 for name in set(names))
    assert RULE.fullmatch(params.user_id)
    assert params.client_id is None or RULE.fullmatch(params.client_id)
    assert params.bsn is None or elfproef(params.bsn)
    assert params.view == values.get("view")


@given(st.from_regex(r"[0-9]{9}", fullmatch=True))
def test_elfproef_weighted_sum(bsn: str) -> None:
    total = sum(int(digit) * weight for digit, weight in zip(bsn, (9, 8, 7, 6, 5, 4, 3, 2, -1)))
    assert elfproef(bsn) == (total % 11 == 0 and bsn != "000000000")


@given(st.text(max_size=12))
def test_elfproef_needs_nine_ascii_digits(text: str) -> None:
    if elfproef(text):
        assert re.fullmatch(r"[0-9]{9}", text)
