"""The failure throttle and the refused credentials: per address, in a window, bounded in size."""

from __future__ import annotations

import pytest

from app.access.throttle import FailureThrottle, RefusedCredentials, TooManyFailedAttempts, address_bucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_over_its_limit_is_refused_until_its_window_ends():
    clock = Clock()
    throttle = FailureThrottle(3, 60, timer=clock)
    for _ in range(3):
        throttle.attempt("192.0.2.1")

    clock.now += 20
    with pytest.raises(TooManyFailedAttempts) as refused:
        throttle.attempt("192.0.2.1")
    throttle.attempt("192.0.2.2")  # another address has its own count

    assert refused.value.code == "too_many_failed_attempts"
    assert refused.value.retry_after == 40
    clock.now += 41
    throttle.attempt("192.0.2.1")  # a new window


def test_a_success_takes_its_attempt_back_but_never_earlier_failures():
    throttle = FailureThrottle(2, 60, timer=Clock())
    throttle.attempt("192.0.2.1")
    for _ in range(10):
        throttle.attempt("192.0.2.1")
        throttle.succeeded("192.0.2.1")
    throttle.attempt("192.0.2.1")

    with pytest.raises(TooManyFailedAttempts):
        throttle.attempt("192.0.2.1")


def test_failures_the_throttle_did_not_ask_about_count_too():
    throttle = FailureThrottle(2, 60, timer=Clock())
    throttle.failed("192.0.2.1")
    throttle.failed("192.0.2.1")

    with pytest.raises(TooManyFailedAttempts):
        throttle.attempt("192.0.2.1")


def test_a_limit_of_zero_throttles_nothing():
    throttle = FailureThrottle(0, 60)
    for _ in range(1000):
        throttle.attempt("192.0.2.1")
    assert len(throttle) == 0


def test_the_addresses_remembered_are_bounded():
    throttle = FailureThrottle(5, 60, max_addresses=100, timer=Clock())
    for n in range(10_000):
        throttle.attempt(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        (None, "unknown"),
        ("", "unknown"),
        ("testclient", "testclient"),
    ],
)
def test_an_ipv6_host_counts_as_its_64_and_an_ipv4_mapped_one_as_ipv4(address, bucket):
    assert address_bucket(address) == bucket


def test_refused_credentials_are_forgotten_after_their_time_and_bounded():
    clock = Clock()
    refused = RefusedCredentials(max_size=100, seconds=600, timer=clock)
    refused.add("a" * 64)
    assert "a" * 64 in refused
    clock.now += 601
    assert "a" * 64 not in refused
    for n in range(1000):
        refused.add(f"{n:064}")
    assert len(refused) == 100
    refused.discard(f"{999:064}")
    assert f"{999:064}" not in refused
