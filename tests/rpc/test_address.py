"""One address type and parser: ``rpc.Endpoint`` (``registry.parse_address`` is the same)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_micro import rpc
from trio_micro.registry import parse_address

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

labels = st.builds(
    lambda first, middle, last: first + middle + last,
    st.sampled_from(_LETTERS),
    st.text(_LETTERS + "-", max_size=40),
    st.sampled_from(_LETTERS),
) | st.sampled_from(_LETTERS)
host_names = (
    st.lists(labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda name: not name.replace(".", "").isdigit())
)
ports = st.integers(1, 65535)


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("127.0.0.1:50051", "127.0.0.1", 50051),
        ("Users.Example.COM:443", "users.example.com", 443),
        ("host-1.internal.:65535", "host-1.internal.", 65535),
        ("[::1]:8080", "::1", 8080),
        ("[2001:DB8:0:0::1]:80", "2001:db8::1", 80),
        ("[fe80::1%eth0]:80", "fe80::1%eth0", 80),
        ("10.0.0.1:0080", "10.0.0.1", 80),
        (f"{'a' * 63}.b:1", f"{'a' * 63}.b", 1),
        ("xn--bcher-kva.example:1", "xn--bcher-kva.example", 1),
    ],
)
def test_parse_gives_the_canonical_endpoint(address: str, host: str, port: int) -> None:
    endpoint = rpc.Endpoint.parse(address)
    assert (endpoint.host, endpoint.port) == (host, port)
    assert endpoint == rpc.Endpoint(host, port)


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("a/b:1", "without a scheme or path"),
        ("http://h:1", "without a scheme or path"),
        ("::1:80", "needs brackets"),
        ("[1.2.3.4]:80", "no valid IPv6"),
        ("[fe80::1%a b]:80", "no valid IPv6"),
        ("1.2.3:80", "not a valid IPv4"),
        ("01.2.3.4:80", "not a valid IPv4"),
        ("a_b:80", "DNS name"),
        ("-a:80", "DNS name"),
        ("a-:80", "DNS name"),
        ("a..b:80", "DNS name"),
        (f"{'a' * 64}:80", "DNS name"),
        (f"{'a.' * 127}ab:80", "DNS name"),  # 255 characters
        ("\u212a:80", "DNS name"),  # KELVIN SIGN, which str.lower() turns into 'k'
        ("h:0", r"\[1, 65535\]"),
        ("h:65536", r"\[1, 65535\]"),
        ("h:+1", "decimal port"),
        ("h:\u0663", "decimal port"),  # ARABIC-INDIC DIGIT THREE
    ],
)
def test_parse_rejects(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        rpc.Endpoint.parse(address)
    assert repr(address) in str(info.value)


@pytest.mark.parametrize(
    ("host", "error"),
    [("", ValueError), ("[::1]", ValueError), ("a/b", ValueError), (b"h", TypeError)],
)
def test_constructor_checks_the_host_by_the_same_rules(host: object, error: type) -> None:
    with pytest.raises(error, match="host"):
        rpc.Endpoint(host, 80)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("port", "error"), [(0, ValueError), (65536, ValueError), (True, TypeError), ("1", TypeError)]
)
def test_constructor_checks_the_port(port: object, error: type) -> None:
    with pytest.raises(error, match="port"):
        rpc.Endpoint("h", port)  # type: ignore[arg-type]


def test_constructor_canonicalises_the_host() -> None:
    assert rpc.Endpoint("LocalHost", 1) == rpc.Endpoint.parse("localhost:1")
    assert rpc.Endpoint("0:0::1", 1).host == "::1"


@given(host_names, ports)
def test_every_rfc_1123_name_parses_lower_cased(host: str, port: int) -> None:
    endpoint = rpc.Endpoint.parse(f"{host}:{port}")
    assert endpoint.host == host.lower()
    assert endpoint.port == port


@given(st.ip_addresses(), ports)
def test_every_ip_address_parses_to_its_compressed_form(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    text = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    endpoint = rpc.Endpoint.parse(text)
    assert endpoint.host == address.compressed
    assert str(endpoint) == text


@given(st.ip_addresses(v=6), ports)
def test_an_ipv6_address_without_brackets_is_refused(
    address: ipaddress.IPv6Address, port: int
) -> None:
    with pytest.raises(ValueError, match="needs brackets"):
        rpc.Endpoint.parse(f"{address}:{port}")


@given(st.text("aZ09-.:[]%/_\u212a", max_size=24) | st.from_regex(r"[a-z.]{1,9}:[0-9]{1,6}"))
def test_the_registry_parses_as_rpc_and_the_canonical_form_is_stable(text: str) -> None:
    try:
        endpoint = rpc.Endpoint.parse(text)
    except ValueError:
        with pytest.raises(ValueError):
            parse_address(text)
        return
    assert parse_address(text) == (endpoint.host, endpoint.port)
    again = rpc.Endpoint.parse(str(endpoint))
    assert again == endpoint
    assert str(again) == str(endpoint)
    assert rpc.Endpoint(endpoint.host, endpoint.port) == endpoint
