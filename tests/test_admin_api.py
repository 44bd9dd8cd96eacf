"""The Admin API client against a fake Admin API on loopback: pagination, days summed right, faults survived."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from exporter.sources.anthropic_admin import (
    CLAUDE_CODE,
    COST,
    MESSAGES,
    AdminApiError,
    AdminAuthError,
    AdminClient,
    cents_to_nano,
)
from tests.support.fakeadmin import (
    KEY,
    AdminState,
    Fault,
    claude_code_record,
    cost_result,
    fake_admin,
    key_file,
    message_bucket,
    message_result,
)

DAY = datetime(2026, 11, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def fake() -> Iterator[tuple[str, AdminState]]:
    with fake_admin() as running:
        yield running


@pytest.fixture(name="key_file")
def key_in_tmp(tmp_path: Path) -> Path:
    return key_file(tmp_path)


def client(base: str, key_file: Path, waits: list[float] | None = None) -> AdminClient:
    return AdminClient(key_file, base, sleep=(waits if waits is not None else []).append)


def test_a_day_of_21_hourly_buckets_over_several_pages_sums_every_token_into_one_row(fake, key_file) -> None:
    base, state = fake
    # 21 busy hours (03:00 to 23:00), each a little different, so a dropped or doubled bucket shows in the sum
    hours = range(3, 24)
    state.messages = [
        message_bucket(
            DAY + h * HOUR, HOUR, message_result(100 + h, 1000 + h, write_5m=10 * h, write_1h=h, read=5000 + h)
        )
        for h in hours
    ]
    state.page_size = 4  # 6 pages
    report = client(base, key_file).messages(DAY, DAY + 24 * HOUR, bucket_width="1h")
    assert report.pages == 6
    assert len(report.rows) == 1
    row = report.rows[0]
    assert row.day == date(2026, 11, 30)
    assert row.uncached_input_tokens == sum(100 + h for h in hours) == 2373
    assert row.output_tokens == sum(1000 + h for h in hours)
    assert row.cache_write_5m_tokens == sum(10 * h for h in hours)
    assert row.cache_write_1h_tokens == sum(hours)
    assert row.cache_read_tokens == sum(5000 + h for h in hours)
    assert not report.skipped


def test_cache_writes_are_kept_apart_from_uncached_input(fake, key_file) -> None:
    base, state = fake
    state.messages = [message_bucket(DAY, 24 * HOUR, message_result(7, 9, write_5m=300, write_1h=40, read=2000))]
    (row,) = client(base, key_file).messages(DAY, DAY + 24 * HOUR).rows
    assert (row.uncached_input_tokens, row.cache_write_5m_tokens, row.cache_write_1h_tokens) == (7, 300, 40)


def test_hourly_buckets_fall_into_the_utc_day_they_start_on_and_dimensions_stay_apart(fake, key_file) -> None:
    base, state = fake
    state.messages = [
        message_bucket(DAY + 23 * HOUR, HOUR, message_result(1, 1, model="claude-opus-4-5-20251101")),
        message_bucket(DAY + 24 * HOUR, HOUR, message_result(2, 2, model="claude-opus-4-5-20251101")),
        message_bucket(DAY + 25 * HOUR, HOUR, message_result(3, 3), message_result(4, 4, api_key_id="apikey_02")),
    ]
    rows = client(base, key_file).messages(DAY, DAY + 48 * HOUR, bucket_width="1h").rows
    got = {(r.day.day, r.model, r.api_key_id): r.uncached_input_tokens for r in rows}
    assert got == {
        (30, "claude-opus-4-5-20251101", "apikey_01"): 1,
        (1, "claude-opus-4-5-20251101", "apikey_01"): 2,
        (1, "claude-sonnet-4-5-20250929", "apikey_01"): 3,
        (1, "claude-sonnet-4-5-20250929", "apikey_02"): 4,
    }


def test_every_request_carries_the_key_and_version_and_asks_for_the_documented_parameters(fake, key_file) -> None:
    base, state = fake
    state.messages = [message_bucket(DAY + h * HOUR, HOUR, message_result(1, 1)) for h in range(5)]
    state.page_size = 2
    client(base, key_file).messages(DAY, DAY + 24 * HOUR, bucket_width="1h")
    assert [s.path for s in state.seen] == [MESSAGES] * 3
    assert all(s.key_ok and s.version == "2023-06-01" for s in state.seen)
    first = state.seen[0].query
    assert first["starting_at"] == ["2026-11-30T00:00:00Z"] and first["ending_at"] == ["2026-12-01T00:00:00Z"]
    assert first["bucket_width"] == ["1h"]
    assert set(first["group_by[]"]) == {"model", "workspace_id", "api_key_id", "service_tier", "context_window"}
    assert "page" not in first and state.seen[1].query["page"] != state.seen[2].query["page"]


def test_a_429_waits_as_long_as_retry_after_says_then_reads_the_report(fake, key_file) -> None:
    base, state = fake
    state.messages = [message_bucket(DAY, 24 * HOUR, message_result(5, 6))]
    state.faults = [Fault(429, {"retry-after": "17"}), Fault(429, {"retry-after": "3"})]
    waits: list[float] = []
    (row,) = client(base, key_file, waits).messages(DAY, DAY + 24 * HOUR).rows
    assert waits == [17.0, 3.0]
    assert row.output_tokens == 6


def test_server_errors_back_off_longer_each_time_and_end_in_an_error_naming_the_endpoint(
    fake, key_file, caplog
) -> None:
    base, state = fake
    state.faults = [Fault(503), Fault(500), Fault(529), Fault(502), Fault(500)]
    caplog.set_level(logging.DEBUG)
    waits: list[float] = []
    with pytest.raises(AdminApiError) as caught:
        client(base, key_file, waits).costs(DAY, DAY + 24 * HOUR)
    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert COST in str(caught.value) and "HTTP 500" in str(caught.value)
    assert caplog.text.count("trying again") == 4 and "HTTP 529" in caplog.text
    assert KEY not in caplog.text and KEY[-12:] not in caplog.text


def test_a_server_error_once_is_survived(fake, key_file) -> None:
    base, state = fake
    state.costs = [message_bucket(DAY, 24 * HOUR, cost_result("100"))]
    state.faults = [Fault(500)]
    waits: list[float] = []
    (row,) = client(base, key_file, waits).costs(DAY, DAY + 24 * HOUR).rows
    assert waits == [1.0] and row.cost_nano_usd == 1_000_000_000


def test_an_answer_cut_short_is_tried_again_like_a_server_error(fake, key_file) -> None:
    base, state = fake
    state.costs = [message_bucket(DAY, 24 * HOUR, cost_result("250"))]
    state.faults = [Fault(200, body=b'{"data": [', cut=True)]
    waits: list[float] = []
    (row,) = client(base, key_file, waits).costs(DAY, DAY + 24 * HOUR).rows
    assert waits == [1.0] and row.cost_nano_usd == 2_500_000_000


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_a_clear_error_naming_the_endpoint_and_never_the_key(fake, key_file, caplog, status) -> None:
    base, state = fake
    state.faults = [Fault(status)]
    caplog.set_level(logging.DEBUG)
    admin = client(base, key_file)
    with pytest.raises(AdminAuthError) as caught:
        admin.messages(DAY, DAY + 24 * HOUR)
    message = str(caught.value)
    assert MESSAGES in message and f"HTTP {status}" in message and "admin key" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    for text in (message, repr(caught.value), repr(admin), caplog.text):
        assert KEY not in text and KEY[-12:] not in text
    assert len(state.seen) == 1  # a refused key is not retried


def test_a_wrong_key_from_the_file_is_refused_by_the_fake_and_reported_without_it(fake, tmp_path) -> None:
    base, _ = fake
    wrong = tmp_path / "wrong.key"
    wrong.write_text("sk-ant-admin01-not-the-right-one", encoding="utf-8")
    with pytest.raises(AdminAuthError) as caught:
        AdminClient(wrong, base, sleep=lambda s: None).claude_code(date(2026, 11, 30))
    assert "not-the-right-one" not in str(caught.value)


def test_a_missing_or_empty_key_file_is_an_error_naming_the_file(tmp_path) -> None:
    with pytest.raises(AdminApiError, match=r"admin\.key"):
        AdminClient(tmp_path / "admin.key")
    empty = tmp_path / "empty.key"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(AdminApiError, match=r"empty\.key"):
        AdminClient(empty)


@pytest.mark.parametrize(
    "body", [b"<html>gateway</html>", b'{"data": "nope"}', b"[]", b'{"has_more": false}', b"\xff\xfe"]
)
def test_a_body_that_is_not_a_report_is_a_clear_error_not_a_crash(fake, key_file, body) -> None:
    base, state = fake
    state.faults = [Fault(200, body=body)]
    with pytest.raises(AdminApiError, match="cost_report"):
        client(base, key_file).costs(DAY, DAY + 24 * HOUR)


def test_has_more_without_a_next_page_is_an_error_rather_than_half_a_report(fake, key_file) -> None:
    base, state = fake
    state.faults = [Fault(200, body=b'{"data": [], "has_more": true, "next_page": null}')]
    with pytest.raises(AdminApiError, match="next_page"):
        client(base, key_file).messages(DAY, DAY + 24 * HOUR)


def test_malformed_buckets_and_rows_are_counted_and_skipped_and_the_rest_is_kept(fake, key_file) -> None:
    base, state = fake
    good = message_result(10, 20)
    state.messages = [
        message_bucket(DAY, HOUR, good),
        "not a bucket",
        {"starting_at": "yesterday", "ending_at": "2026-11-30T02:00:00Z", "results": [good]},
        {"starting_at": "2026-11-30T02:00:00Z", "ending_at": "2026-11-30T03:00:00Z", "results": None},
        message_bucket(
            DAY + 3 * HOUR,
            HOUR,
            good,
            "a string",  # type: ignore[arg-type]
            {**good, "output_tokens": -1},
            {**good, "uncached_input_tokens": "12"},
            {**good, "cache_creation": [1, 2]},
            {**good, "model": 42},
            {**good, "output_tokens": True},
        ),
    ]
    report = client(base, key_file).messages(DAY, DAY + 24 * HOUR, bucket_width="1h")
    assert report.skipped == {"malformed bucket": 3, "malformed row": 6}
    (row,) = report.rows
    assert (row.uncached_input_tokens, row.output_tokens) == (20, 40)


def test_a_partial_day_read_again_later_gives_the_whole_day_not_the_sum_of_both_reads(fake, key_file) -> None:
    base, state = fake
    state.messages = [message_bucket(DAY + h * HOUR, HOUR, message_result(100, 10)) for h in range(8)]
    admin = client(base, key_file)
    (early,) = admin.messages(DAY, DAY + 24 * HOUR, bucket_width="1h").rows
    # the day goes on, and an hour already reported is corrected upwards (a late correction)
    state.messages += [message_bucket(DAY + h * HOUR, HOUR, message_result(100, 10)) for h in range(8, 24)]
    state.messages[2] = message_bucket(DAY + 2 * HOUR, HOUR, message_result(150, 10))
    (late,) = admin.messages(DAY, DAY + 24 * HOUR, bucket_width="1h").rows
    assert early.uncached_input_tokens == 800
    assert late.uncached_input_tokens == 24 * 100 + 50


def test_cost_amounts_are_decimal_strings_of_cents_and_become_exact_nano_dollars(fake, key_file) -> None:
    base, state = fake
    state.costs = [
        message_bucket(
            DAY, 24 * HOUR, cost_result("123.45"), cost_result("0.0001", token_type="cache_read_input_tokens")
        ),
        message_bucket(DAY + 24 * HOUR, 24 * HOUR, cost_result("123.78912")),
    ]
    rows = client(base, key_file).costs(DAY, DAY + 48 * HOUR).rows
    assert [(r.day.day, r.token_type, r.cost_nano_usd) for r in rows] == [
        (30, "cache_read_input_tokens", 1_000),  # a hundredth of a hundredth of a cent
        (30, "output_tokens", 1_234_500_000),  # 123.45 cents: $1.2345 (the reference rounds it to "$1.23")
        (1, "output_tokens", 1_237_891_200),
    ]


def test_cost_lines_in_another_currency_or_without_an_amount_are_counted_not_summed(fake, key_file) -> None:
    base, state = fake
    state.costs = [
        message_bucket(
            DAY,
            24 * HOUR,
            cost_result("100"),
            {**cost_result("100"), "currency": "EUR"},
            {**cost_result("100"), "amount": None},
            {**cost_result("100"), "amount": "lots"},
        )
    ]
    report = client(base, key_file).costs(DAY, DAY + 24 * HOUR)
    assert report.skipped == {"not USD": 1, "malformed row": 2}
    assert [r.cost_nano_usd for r in report.rows] == [1_000_000_000]


def test_claude_code_analytics_give_one_row_per_user_and_day_across_pages(fake, key_file) -> None:
    base, state = fake
    day = date(2026, 11, 30)
    state.claude_code[day.isoformat()] = [claude_code_record(day, f"dev{i}@example.com", sessions=i) for i in range(5)]
    state.claude_code[day.isoformat()].append({"actor": {"type": "user_actor"}, "date": day.isoformat()})
    state.page_size = 2
    report = client(base, key_file).claude_code(day)
    assert report.pages == 3 and report.skipped == {"malformed row": 1}
    assert [r.actor for r in report.rows] == [f"dev{i}@example.com" for i in range(5)]
    row = report.rows[3]
    assert (row.day, row.sessions, row.lines_added, row.lines_removed, row.commits, row.pull_requests) == (
        day,
        3,
        120,
        30,
        4,
        1,
    )
    (model,) = row.models
    assert (model.input_tokens, model.output_tokens, model.cache_read_tokens, model.cache_write_tokens) == (
        1000,
        2000,
        30000,
        4000,
    )
    assert model.estimated_cost_nano_usd == 1_505_000_000  # 150.5 cents
    assert state.seen[0].path == CLAUDE_CODE and state.seen[0].query["starting_at"] == ["2026-11-30"]


def test_cents_to_nano_is_exact_for_fractions_of_a_cent() -> None:
    assert cents_to_nano("0.00000001") == 0  # below a nano-dollar rounds to even
    assert cents_to_nano("0.0000001") == 1
    assert cents_to_nano(12) == 120_000_000
    assert cents_to_nano("99999999.99") == 999_999_999_900_000
