"""Producer settings: Python keywords → the engine's JSON configuration.

Every keyword is either mapped to a kpush option or rejected with a
TypeError naming it; nothing is silently ignored.
"""

from __future__ import annotations

import json
import ssl
from typing import Any, Callable, Optional

from ._errors import InvalidConfigError

__all__ = ["Settings", "build_settings", "KPUSH_KEYWORDS"]

_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
_CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
_PARTITIONERS = ("sticky", "murmur2", "crc32", "round_robin")

#: Keywords of kpush.aio.Producer and kpush.Producer (besides bootstrap_servers).
KPUSH_KEYWORDS = frozenset(
    {
        "client_id",
        "acks",
        "compression_type",
        "linger_ms",
        "max_batch_bytes",
        "enable_idempotence",
        "request_timeout_ms",
        "retry_backoff_ms",
        "metadata_max_age_ms",
        "delivery_timeout_ms",
        "dial_timeout_ms",
        "max_buffered_bytes",
        "max_buffered_records",
        "max_in_flight",
        "fail_fast_when_full",
        "partitioner",
        "default_topic",
        "security_protocol",
        "ssl_context",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_oauth_token_provider",
    }
)


class Settings:
    """The validated settings of one producer."""

    def __init__(self, config: dict[str, Any], token_provider: Any) -> None:
        self.config = config
        self.token_provider = token_provider

    def to_json(self) -> bytes:
        """The JSON the engine's kp_new reads."""
        return json.dumps(self.config).encode()


def _num(name: str, v: Any, *, integer: bool = False, minimum: float = 0) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float) if not integer else int):
        raise TypeError(f"kpush: {name} must be {'an int' if integer else 'a number'}, not {type(v).__name__}")
    if v < minimum:
        raise InvalidConfigError(f"kpush: {name} must be at least {minimum}, not {v}", "invalid_config")
    return v


def _str(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"kpush: {name} must be a str, not {type(v).__name__}")
    return v


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"kpush: {name} must be a bool, not {type(v).__name__}")
    return v


def _brokers(v: Any) -> list[str]:
    if isinstance(v, str):
        out = [s.strip() for s in v.split(",") if s.strip()]
    elif isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v):
        out = [s.strip() for s in v]
    else:
        raise TypeError("kpush: bootstrap_servers must be a str or a list of str")
    if not out:
        raise InvalidConfigError("kpush: bootstrap_servers is empty", "invalid_config")
    return out


def _tls_from_context(ctx: Any) -> dict[str, Any]:
    """The engine's TLS settings from an ssl.SSLContext: its CA certificates,
    whether it verifies the broker's certificate (verify_mode) and whether
    it checks the broker's host name against it (check_hostname: off with
    verification on, the chain is still verified against the CAs). What
    else a context can carry and the engine would not honour raises
    ValueError naming it (never silently ignored): a client certificate
    chain (mutual TLS)."""
    if not isinstance(ctx, ssl.SSLContext):
        raise TypeError(f"kpush: ssl_context must be an ssl.SSLContext, not {type(ctx).__name__}")
    import base64

    if _context_has_client_cert(ctx):
        raise InvalidConfigError(
            "kpush: ssl_context carries a client certificate chain (load_cert_chain), which kpush cannot "
            "take from an SSLContext; pass ssl_certfile and ssl_keyfile (PEM files) to kpush.aio.Producer instead",
            "invalid_config",
        )
    der = ctx.get_ca_certs(binary_form=True)
    verify = ctx.verify_mode != ssl.CERT_NONE
    return {
        "ca_der": [base64.b64encode(c).decode() for c in der],
        "insecure_skip_verify": not verify,
        "skip_hostname_check": verify and not ctx.check_hostname,
    }


def _context_has_client_cert(ctx: ssl.SSLContext) -> bool:
    """Whether load_cert_chain was called on ctx. Python's ssl module has no
    getter for it, so this asks OpenSSL (SSL_CTX_get0_certificate) through
    the _ssl extension, whose object starts with its SSL_CTX pointer right
    after the object header (CPython's PySSLContext, checked on 3.8 to
    3.13). Where that cannot be done, raise: an unchecked context could
    carry a certificate kpush would drop."""
    import ctypes
    import sys

    def refuse(why: str) -> InvalidConfigError:
        return InvalidConfigError(
            f"kpush: cannot inspect ssl_context on this interpreter ({why}); pass ssl_cafile, ssl_certfile "
            "and ssl_keyfile instead",
            "invalid_config",
        )

    try:
        if sys.implementation.name != "cpython":
            raise OSError(sys.implementation.name)
        import _ssl

        # The _ssl extension's handle resolves symbols in the libssl it links
        # (dlsym searches a library's dependencies); a built-in _ssl (no
        # __file__) leaves the process's global symbols, which may be another
        # OpenSSL: the version check below catches that before any pointer
        # is followed.
        lib = ctypes.CDLL(getattr(_ssl, "__file__", None))
        get_cert = lib.SSL_CTX_get0_certificate
        get_mode = lib.SSL_CTX_get_verify_mode
        version = lib.OpenSSL_version_num
    except (OSError, AttributeError, ImportError) as e:
        raise refuse(str(e)) from None
    version.restype, version.argtypes = ctypes.c_ulong, []
    # Python's OPENSSL_VERSION_NUMBER is OpenSSL_version_num() of the
    # library _ssl runs with: a different one found here would have another
    # SSL_CTX layout, and reading through it could crash the process.
    if version() != ssl.OPENSSL_VERSION_NUMBER:
        raise refuse(f"OpenSSL {version():#x} found, Python's ssl uses {ssl.OPENSSL_VERSION_NUMBER:#x}")
    # The C object must have room for the pointer after the header.
    if getattr(_ssl, "_SSLContext", object).__basicsize__ < object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p):
        raise refuse("unexpected SSLContext layout")
    get_cert.restype, get_cert.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    get_mode.restype, get_mode.argtypes = ctypes.c_int, [ctypes.c_void_p]
    sslctx = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    # A consistency check that the pointer is this context's (it cannot
    # catch a pointer that is not an SSL_CTX at all; the checks above are
    # what rule that out): OpenSSL's verify mode (SSL_VERIFY_PEER 1 |
    # FAIL_IF_NO_PEER_CERT 2) matches Python's.
    want = {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: 1, ssl.CERT_REQUIRED: 3}[ctx.verify_mode]
    if not sslctx or get_mode(sslctx) & 3 != want:
        raise refuse("its SSL_CTX could not be found")
    return get_cert(sslctx) is not None


def build_settings(bootstrap_servers: Any, kw: dict[str, Any], owner: str) -> Settings:
    """Validate kpush keywords; raise TypeError naming any unknown one."""
    for name in kw:
        if name not in KPUSH_KEYWORDS:
            raise TypeError(f"{owner}() got an unsupported keyword argument {name!r}")
    c: dict[str, Any] = {"brokers": _brokers(bootstrap_servers)}
    ms_fields = {
        "linger_ms": "linger_ms",
        "request_timeout_ms": "request_timeout_ms",
        "retry_backoff_ms": "retry_backoff_ms",
        "metadata_max_age_ms": "metadata_max_age_ms",
        "delivery_timeout_ms": "delivery_timeout_ms",
        "dial_timeout_ms": "dial_timeout_ms",
    }
    for py, js in ms_fields.items():
        if kw.get(py) is not None:
            c[js] = _num(py, kw[py])
    int_fields = {
        "max_batch_bytes": "max_batch_bytes",
        "max_buffered_bytes": "max_buffered_bytes",
        "max_buffered_records": "max_buffered_records",
        "max_in_flight": "max_inflight",
    }
    for py, js in int_fields.items():
        if kw.get(py) is not None:
            c[js] = _num(py, kw[py], integer=True, minimum=1)
    if kw.get("client_id") is not None:
        c["client_id"] = _str("client_id", kw["client_id"])
    if kw.get("default_topic") is not None:
        c["default_topic"] = _str("default_topic", kw["default_topic"])
    if kw.get("acks") is not None:
        a = kw["acks"]
        acks = {"all": -1, -1: -1, 0: 0, 1: 1}.get(a) if not isinstance(a, bool) else None
        if acks is None:
            raise InvalidConfigError(f"kpush: acks must be 'all', -1, 0 or 1, not {a!r}", "invalid_config")
        c["acks"] = acks
    if kw.get("compression_type") is not None:
        codec = _str("compression_type", kw["compression_type"]).lower()
        if codec not in _CODECS:
            raise InvalidConfigError(f"kpush: compression_type must be one of {_CODECS}, not {codec!r}", "invalid_config")
        c["compression"] = codec
    if kw.get("enable_idempotence") is not None:
        c["idempotence"] = _bool("enable_idempotence", kw["enable_idempotence"])
    if kw.get("fail_fast_when_full") is not None:
        c["fail_fast"] = _bool("fail_fast_when_full", kw["fail_fast_when_full"])
    if kw.get("partitioner") is not None:
        p = _str("partitioner", kw["partitioner"])
        if p not in _PARTITIONERS:
            raise InvalidConfigError(f"kpush: partitioner must be one of {_PARTITIONERS}, not {p!r}", "invalid_config")
        c["partitioner"] = p
    proto = _str("security_protocol", kw.get("security_protocol") or "PLAINTEXT").upper()
    if proto not in _PROTOCOLS:
        raise InvalidConfigError(f"kpush: security_protocol must be one of {_PROTOCOLS}, not {proto!r}", "invalid_config")
    tls_kw = [k for k in ("ssl_context", "ssl_cafile", "ssl_certfile", "ssl_keyfile") if kw.get(k) is not None]
    sasl_kw = [k for k in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password", "sasl_oauth_token_provider") if kw.get(k) is not None]
    if proto.endswith("SSL"):
        tls: dict[str, Any] = {}
        if kw.get("ssl_context") is not None:
            tls.update(_tls_from_context(kw["ssl_context"]))
        for py, js in (("ssl_cafile", "ca_file"), ("ssl_certfile", "cert_file"), ("ssl_keyfile", "key_file")):
            if kw.get(py) is not None:
                tls[js] = _str(py, kw[py])
        c["tls"] = tls
    elif tls_kw:
        raise InvalidConfigError(f"kpush: {tls_kw[0]} needs security_protocol SSL or SASL_SSL, not {proto}", "invalid_config")
    token = None
    if proto.startswith("SASL"):
        mech = _str("sasl_mechanism", kw.get("sasl_mechanism") or "PLAIN").upper()
        if mech not in _MECHANISMS:
            raise InvalidConfigError(f"kpush: sasl_mechanism must be one of {_MECHANISMS}, not {mech!r}", "invalid_config")
        sasl = {"mechanism": mech}
        if mech == "OAUTHBEARER":
            token = kw.get("sasl_oauth_token_provider")
            if token is None or not hasattr(token, "token"):
                raise InvalidConfigError("kpush: OAUTHBEARER needs sasl_oauth_token_provider (an object with token())", "invalid_config")
        else:
            sasl["username"] = _str("sasl_plain_username", kw.get("sasl_plain_username") or "")
            sasl["password"] = _str("sasl_plain_password", kw.get("sasl_plain_password") or "")
        c["sasl"] = sasl
    elif sasl_kw:
        raise InvalidConfigError(f"kpush: {sasl_kw[0]} needs security_protocol SASL_PLAINTEXT or SASL_SSL, not {proto}", "invalid_config")
    return Settings(c, token)


Serializer = Optional[Callable[[Any], Any]]
