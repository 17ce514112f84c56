"""Addresses, endpoints and the error tree (no backend, no I/O)."""

from __future__ import annotations

import pytest

from trio_micro import TrioMicroError
from trio_micro.registry import (
    DuplicateRegistrationError,
    Endpoint,
    RegistryBackendError,
    RegistryError,
    RegistryUnavailableError,
    parse_address,
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("Users.Example.COM:443", ("users.example.com", 443)),
        ("localhost:1", ("localhost", 1)),
        ("host-1.internal.:65535", ("host-1.internal.", 65535)),
        ("[::1]:8080", ("::1", 8080)),
        ("[2001:DB8:0:0::1]:80", ("2001:db8::1", 80)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        ("10.0.0.1:0080", ("10.0.0.1", 80)),
    ],
)
def test_parse_address_normalises(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    "address",
    ["", ":", "host", "host:-1", "host:+80", "host:8 0", "host:٣", "[::1]", "[::1:80", "a..b:80"],
)
def test_parse_address_rejects_malformed_input(address: str) -> None:
    with pytest.raises(ValueError, match="address") as info:
        parse_address(address)
    assert repr(address) in str(info.value)


def test_parse_address_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="address must be a str"):
        parse_address(50051)


def test_endpoint_stores_the_canonical_address_and_a_copy_of_the_metadata() -> None:
    metadata = {"zone": "a"}
    endpoint = Endpoint("[0::1]:80", metadata)
    metadata["zone"] = "b"
    assert endpoint.address == "[::1]:80"
    assert endpoint.host == "::1"
    assert endpoint.port == 80
    assert endpoint.metadata == {"zone": "a"}
    with pytest.raises(TypeError):
        endpoint.metadata["zone"] = "c"  # type: ignore[index]


def test_endpoints_compare_and_hash_by_address_and_metadata() -> None:
    assert Endpoint("h:1", {"a": "1"}) == Endpoint("H:1", {"a": "1"})
    assert Endpoint("h:1", {"a": "1"}) != Endpoint("h:1", {"a": "2"})
    assert len({Endpoint("h:1"), Endpoint("h:1", {}), Endpoint("h:2")}) == 2


def test_endpoint_repr_shows_address_and_metadata() -> None:
    assert repr(Endpoint("h:1", {"a": "1"})) == "Endpoint(address='h:1', metadata={'a': '1'})"


def test_registry_errors_share_one_root() -> None:
    for error in (DuplicateRegistrationError, RegistryUnavailableError, RegistryBackendError):
        assert issubclass(error, RegistryError)
    assert issubclass(RegistryError, TrioMicroError)
    assert RegistryBackendError("x", code=5).code == 5
