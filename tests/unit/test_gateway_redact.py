"""Redaction of tokens and keys from text and from every log record of the process."""

import logging

from realtime_gateway import redact


def test_known_secret_shapes_are_redacted():
    text = (
        "Authorization: Bearer entra_0123abcd api-key: k3y-VALUE ek_abc_DEF1 "
        '{"access_token": "entra_ffff", "value": "ek_zz"} AccountKey=abc/+==;x '
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"
    )
    out = redact.redact(text)
    for secret in (
        "entra_0123abcd",
        "k3y-VALUE",
        "ek_abc_DEF1",
        "entra_ffff",
        "ek_zz",
        "abc/+==",
        "eyJhbGciOiJIUzI1NiJ9",
    ):
        assert secret not in out
    assert out.count(redact.REDACTED) >= 7


def test_record_factory_redacts_every_logger(caplog):
    redact.install_record_factory()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("some.library").debug("sent headers %s", {"Authorization": "Bearer entra_77"})
    try:
        raise RuntimeError("key ek_secret99 refused")
    except RuntimeError:
        logging.getLogger("other").exception("failed")
    assert "entra_77" not in caplog.text and "ek_secret99" not in caplog.text
    assert "[redacted]" in caplog.text
