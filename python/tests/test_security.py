"""TLS and SASL settings reach the engine (kpush dev --tls --sasl)."""

from __future__ import annotations

import signal
import ssl

import pytest

from conftest import Broker, free_port
from kpush import NotWrittenError
from kpush.aio import AIOKafkaProducer, Producer


@pytest.fixture
def secure_broker(kpush_bin):
    b = Broker(kpush_bin, free_port(), {"secure": 1}, ["--tls", "--sasl", "alice:s3cret,SCRAM-SHA-256"])
    b.start()
    yield b
    b.stop(signal.SIGTERM)


async def test_sasl_ssl_with_cafile(secure_broker):
    async with Producer(bootstrap_servers=secure_broker.bootstrap, security_protocol="SASL_SSL",
                        ssl_cafile=secure_broker.ca_file, sasl_mechanism="SCRAM-SHA-256",
                        sasl_plain_username="alice", sasl_plain_password="s3cret") as p:
        md = await p.send("secure", b"over tls")
        assert md.offset == 0


async def test_aiokafka_ssl_context_maps_its_ca(secure_broker):
    ctx = ssl.create_default_context(cafile=secure_broker.ca_file)
    async with AIOKafkaProducer(bootstrap_servers=secure_broker.bootstrap, security_protocol="SASL_SSL",
                                ssl_context=ctx, sasl_mechanism="SCRAM-SHA-256",
                                sasl_plain_username="alice", sasl_plain_password="s3cret") as p:
        md = await p.send_and_wait("secure", b"via ssl_context")
        assert md.topic == "secure"


async def test_wrong_password_fails_fast_as_authentication(secure_broker):
    async with Producer(bootstrap_servers=secure_broker.bootstrap, security_protocol="SASL_SSL",
                        ssl_cafile=secure_broker.ca_file, sasl_mechanism="SCRAM-SHA-256",
                        sasl_plain_username="alice", sasl_plain_password="Zq9-not-it",
                        delivery_timeout_ms=60_000) as p:
        with pytest.raises(NotWrittenError) as e:
            await p.send("secure", b"x")
        assert e.value.cause in ("authentication", "no_broker"), e.value
        assert "Zq9-not-it" not in e.value.message  # credentials never appear in errors


async def test_untrusted_certificate_is_an_authentication_error(secure_broker):
    async with Producer(bootstrap_servers=secure_broker.bootstrap, security_protocol="SASL_SSL",
                        sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
                        sasl_plain_password="s3cret") as p:
        with pytest.raises(NotWrittenError) as e:
            await p.send("secure", b"x")
        assert e.value.cause in ("authentication", "no_broker"), e.value


def test_ssl_context_client_certificate_is_refused_not_dropped(secure_broker):
    # Python cannot read a loaded certificate chain back out of an
    # SSLContext, so kpush cannot hand it to the engine: it says so rather
    # than connect without the certificate the broker may require.
    import os

    d = os.path.dirname(secure_broker.ca_file)
    ctx = ssl.create_default_context(cafile=secure_broker.ca_file)
    ctx.load_cert_chain(os.path.join(d, "client.pem"), os.path.join(d, "client-key.pem"))
    for cls in (AIOKafkaProducer, Producer):
        with pytest.raises(ValueError, match="client certificate chain") as e:
            cls(bootstrap_servers=secure_broker.bootstrap, security_protocol="SSL", ssl_context=ctx)
        assert "ssl_certfile" in str(e.value)


@pytest.fixture
def misnamed_broker(kpush_bin):
    """A TLS broker on 127.0.0.1 whose certificate (signed by its CA) names
    only kafka.invalid: its chain verifies, its host name does not."""
    b = Broker(kpush_bin, free_port(), {"secure": 1}, ["--tls", "--tls-host", "kafka.invalid"])
    b.start()
    yield b
    b.stop(signal.SIGTERM)


async def test_ssl_context_check_hostname_off_verifies_the_chain_only(misnamed_broker):
    # aiokafka users with a broker certificate for another name set
    # check_hostname=False and keep verify_mode=CERT_REQUIRED: the chain is
    # still verified against the context's CAs, the name is not.
    ctx = ssl.create_default_context(cafile=misnamed_broker.ca_file)
    ctx.check_hostname = False  # verify_mode stays CERT_REQUIRED
    async with AIOKafkaProducer(bootstrap_servers=misnamed_broker.bootstrap, security_protocol="SSL",
                                ssl_context=ctx) as p:
        md = await p.send_and_wait("secure", b"chain verified, name not")
        assert md.topic == "secure" and md.offset == 0


@pytest.mark.parametrize("case", ["name checked", "chain not trusted"])
async def test_ssl_context_misnamed_or_untrusted_broker_is_refused(misnamed_broker, case):
    # The two halves of verification stay on where the context asks: with
    # check_hostname on, the name mismatch fails the connection; with it off
    # and CAs that did not sign the broker's certificate, the chain fails.
    if case == "name checked":
        ctx = ssl.create_default_context(cafile=misnamed_broker.ca_file)
    else:
        ctx = ssl.create_default_context()  # the system's CAs only
        ctx.check_hostname = False
    async with AIOKafkaProducer(bootstrap_servers=misnamed_broker.bootstrap, security_protocol="SSL",
                                ssl_context=ctx, request_timeout_ms=5000) as p:
        with pytest.raises(NotWrittenError) as e:
            await p.send_and_wait("secure", b"x")
        assert e.value.cause in ("authentication", "no_broker"), e.value


async def test_ssl_context_without_verification_maps_to_insecure(secure_broker):
    ctx = ssl.create_default_context()  # not the broker's CA: only CERT_NONE lets it connect
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with AIOKafkaProducer(bootstrap_servers=secure_broker.bootstrap, security_protocol="SASL_SSL",
                                ssl_context=ctx, sasl_mechanism="SCRAM-SHA-256",
                                sasl_plain_username="alice", sasl_plain_password="s3cret") as p:
        md = await p.send_and_wait("secure", b"unverified")
        assert md.topic == "secure"


def test_ssl_context_uninspectable_is_refused(secure_broker, monkeypatch):
    # The certificate check follows the SSLContext's SSL_CTX pointer only
    # through the OpenSSL that Python's ssl runs with: ctypes finding another
    # one (here: a version that does not match) refuses the context instead
    # of reading through a foreign layout (a crash, or a wrong answer).
    ctx = ssl.create_default_context(cafile=secure_broker.ca_file)
    monkeypatch.setattr(ssl, "OPENSSL_VERSION_NUMBER", ssl.OPENSSL_VERSION_NUMBER + 1)
    with pytest.raises(ValueError, match="cannot inspect ssl_context"):
        AIOKafkaProducer(bootstrap_servers=secure_broker.bootstrap, security_protocol="SSL", ssl_context=ctx)
