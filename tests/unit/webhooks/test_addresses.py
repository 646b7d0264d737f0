"""Which webhook URLs a task may name: https to a public address, unless WEBHOOK_ALLOWED_HOSTS says otherwise."""

from __future__ import annotations

import pytest

from app.domain import InvalidWebhook
from app.webhooks.addresses import RefusedAddress, check_url, resolve


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "https://hooks.example.com:8443/a/b?c=d",
        "https://93.184.216.34/hook",
        "https://[2606:4700:4700::1111]/hook",
    ],
)
def test_public_https_urls_are_taken(url):
    assert check_url(url, []).url == url


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://example.com/hook", "https"),
        ("ftp://example.com/hook", "absolute https"),
        ("/hook", "absolute https"),
        ("https://user:secret@example.com/hook", "credentials"),
        ("https://example.com/hook#part", "fragment"),
        ("https://127.0.0.1/hook", "not public"),
        ("https://10.0.0.1/hook", "not public"),
        ("https://192.168.1.10/hook", "not public"),
        ("https://172.16.0.1/hook", "not public"),
        ("https://169.254.169.254/latest/meta-data", "not public"),  # the cloud metadata address
        ("https://100.64.0.1/hook", "not public"),  # carrier-grade NAT
        ("https://[::1]/hook", "not public"),
        ("https://[fe80::1]/hook", "not public"),
        ("https://[fd00::1]/hook", "not public"),
        ("https://[::ffff:127.0.0.1]/hook", "not public"),  # IPv4-mapped loopback
        ("https://0.0.0.0/hook", "not public"),
        ("https://localhost/hook", "local"),
        ("https://LOCALHOST./hook", "local"),
        ("https://api.localhost/hook", "local"),
        ("https://metadata.google.internal/computeMetadata", "local"),
        ("https://printer.local/hook", "local"),
        ("https://example.com:99999/hook", "valid URL"),
        ("https://exa mple.com/hook", "spaces"),
        ("https://example.com/\u00e9", "ASCII"),
        ("https://example.com/" + "a" * 2048, "longer than"),
    ],
)
def test_other_urls_are_refused_naming_the_rule_not_the_url(url, rule):
    with pytest.raises(InvalidWebhook) as refused:
        check_url(url, [])
    assert rule in refused.value.message
    assert url not in refused.value.message
    assert "example" not in refused.value.message


def test_an_allowed_host_may_be_private_and_plain_http():
    target = check_url("http://127.0.0.1:9000/hook", ["127.0.0.1"])
    assert (target.host, target.port, target.allowed_private) == ("127.0.0.1", 9000, True)
    assert check_url("http://receiver:8080/hook", ["RECEIVER"]).allowed_private


async def test_a_name_that_resolves_to_loopback_is_refused_after_resolution():
    # "127.1" and "2130706433" are not IP literals to a URL parser, but the resolver turns them into
    # 127.0.0.1: the check before resolution cannot see it, the one after it does.
    for host in ("127.1", "2130706433"):
        target = check_url(f"https://{host}/hook", [])
        with pytest.raises(RefusedAddress):
            await resolve(target)


async def test_an_allowed_host_resolves_to_its_address():
    assert await resolve(check_url("http://127.0.0.1:9/hook", ["127.0.0.1"])) == "127.0.0.1"
