"""The sign-in throttle's decisions (server/auth/rules.py) and its in-memory ledger, without HTTP
or a database: a growing delay per (email, client), a short one per email that never holds up a
client the account knows, and ASVS's 100 failures per account per hour whatever an attacker
does."""

from __future__ import annotations

from datetime import timedelta

from server.auth import rules
from server.auth.throttle import MemoryLedger, SignInThrottle, SignInThrottled, wait_words
from tests.clock import NOW


def _wait(pair=(), account=(), known=False, now=NOW) -> timedelta:
    return rules.sign_in_wait(
        pair_failures=list(pair), account_failures=list(account), is_known_client=known, now=now
    )


def test_pair_delay_is_free_for_five_then_doubles_up_to_fifteen_minutes():
    assert [rules.pair_delay(n).total_seconds() for n in range(4, 12)] == [
        0,
        1,
        2,
        4,
        8,
        16,
        32,
        64,
    ]
    assert rules.pair_delay(15) == timedelta(minutes=15)
    assert rules.pair_delay(10_000) == timedelta(minutes=15)


def test_pair_wait_counts_from_the_latest_failure_and_forgets_after_a_day():
    five = [NOW - timedelta(seconds=s) for s in (40, 30, 20, 10, 0)]
    assert _wait(pair=five) == timedelta(seconds=1)
    assert _wait(pair=five, now=NOW + timedelta(seconds=1)) == timedelta(0)
    fifteen = [NOW - timedelta(seconds=s) for s in range(15)]
    assert _wait(pair=fifteen) == timedelta(minutes=15)
    # Failures older than a day no longer count.
    old = [NOW - timedelta(hours=25)] * 20
    assert _wait(pair=old) == timedelta(0)


def test_account_wait_is_at_most_a_minute_and_spares_known_clients():
    sprayed = [NOW - timedelta(seconds=s) for s in range(0, 40)]
    wait = _wait(account=sprayed)
    assert timedelta(0) < wait <= rules.ACCOUNT_SPACING == timedelta(seconds=60)
    assert _wait(account=sprayed, known=True) == timedelta(0)
    # Below 20 failures in the hour nobody waits for the account.
    assert _wait(account=sprayed[:19]) == timedelta(0)


def test_the_hundredth_failure_in_an_hour_stops_everyone_until_one_ages_out():
    hundred = [NOW - timedelta(minutes=50) + timedelta(seconds=s) for s in range(100)]
    assert _wait(account=hundred, known=True) == timedelta(minutes=10)


def _simulate(*, seconds: int, clients: int, known_clients: int = 0, step: int = 1) -> list:
    """An attacker that tries again every `step` seconds when it may, from `clients` unfamiliar
    addresses and `known_clients` the account trusts, for `seconds`; returns the failures'
    times."""
    ledger = MemoryLedger()
    throttle = SignInThrottle(ledger, secret="s", prefix="sim")
    for k in range(known_clients):
        throttle.record_success(email="nurse@x.test", client=f"known-{k}", now=NOW)
    failures = []
    for second in range(0, seconds, step):
        now = NOW + timedelta(seconds=second)
        names = [f"ip-{(second * 7 + i) % clients}" for i in range(3)]
        names += [f"known-{k}" for k in range(known_clients)]
        for client in names:
            if throttle.wait(email="nurse@x.test", client=client, now=now) == timedelta(0):
                throttle.record_failure(email="nurse@x.test", client=client, now=now)
                failures.append(now)
    return failures


def _max_in_an_hour(times: list) -> int:
    return max(sum(1 for t in times if start <= t < start + timedelta(hours=1)) for start in times)


def test_a_spray_from_many_addresses_gets_at_most_81_failures_an_hour():
    failures = _simulate(seconds=3 * 3600, clients=500)
    # 20 free, then one a minute: ASVS's 100 with room to spare for the account's own clients.
    assert 75 <= _max_in_an_hour(failures) <= 81


def test_hostile_known_clients_too_never_pass_100_failures_an_hour():
    failures = _simulate(seconds=5400, clients=500, known_clients=10, step=5)
    assert _max_in_an_hour(failures) == rules.ACCOUNT_CEILING


def test_the_throttle_counts_unknown_emails_like_real_ones_and_a_success_clears_the_pair():
    throttle = SignInThrottle(MemoryLedger(), secret="s", prefix="t")
    for email in ("nurse@x.test", "nobody@x.test"):
        for _ in range(5):
            throttle.record_failure(email=email, client="1.2.3.4", now=NOW)
    waits = {
        email: throttle.wait(email=email, client="1.2.3.4", now=NOW)
        for email in ("nurse@x.test", " NOBODY@x.test ")  # normalised like the login
    }
    assert set(waits.values()) == {timedelta(seconds=1)}
    try:
        throttle.check(email="nurse@x.test", client="1.2.3.4", now=NOW)
    except SignInThrottled as exc:
        assert exc.retry_after == 1 and exc.status == 429
    else:
        raise AssertionError("not throttled")
    throttle.record_success(email="nurse@x.test", client="1.2.3.4", now=NOW)
    assert throttle.wait(email="nurse@x.test", client="1.2.3.4", now=NOW) == timedelta(0)
    # Disabled (RATELIMIT_ENABLED false): nothing counts.
    off = SignInThrottle(MemoryLedger(), secret="s", prefix="t", enabled=False)
    for _ in range(50):
        off.record_failure(email="nurse@x.test", client="1.2.3.4", now=NOW)
    assert off.wait(email="nurse@x.test", client="1.2.3.4", now=NOW) == timedelta(0)


def test_the_ledger_keeps_no_email_in_its_keys():
    ledger = MemoryLedger()
    throttle = SignInThrottle(ledger, secret="s", prefix="t")
    throttle.record_failure(email="nurse@x.test", client="1.2.3.4", now=NOW)
    throttle.record_success(email="nurse@x.test", client="5.6.7.8", now=NOW)
    keys = " ".join(ledger._sets)
    assert "nurse" not in keys and "1.2.3.4" not in keys and len(ledger._sets) == 3


def test_a_broken_store_falls_back_to_memory_instead_of_refusing():
    class Down(MemoryLedger):
        def scores(self, key, since):
            raise ConnectionError("redis is down")

        def add(self, *a, **k):
            raise ConnectionError("redis is down")

    throttle = SignInThrottle(Down(), secret="s", prefix="t")
    for _ in range(5):
        throttle.record_failure(email="nurse@x.test", client="1.2.3.4", now=NOW)
    assert throttle.wait(email="nurse@x.test", client="1.2.3.4", now=NOW) == timedelta(seconds=1)


def test_wait_words():
    assert wait_words(1) == "in 1 second"
    assert wait_words(59) == "in 59 seconds"
    assert wait_words(901) == "in 16 minutes"
