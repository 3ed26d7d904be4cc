"""Identifiers in the shapes the service uses (prefix + hex)."""

import secrets


def new_id(prefix: str, nbytes: int = 12) -> str:
    return f"{prefix}_{secrets.token_hex(nbytes)}"
