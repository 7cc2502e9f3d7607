"""Instructions between sites and their Ed25519 signatures.

The scheduler of the sending site writes a signed instruction (``.Icl``) for each send
request: what package file it is, its SHA-256 and size, where it is going. The sender
carries it to the destination (``.TMP`` renamed to ``.SNI`` last); the destination's
despooler checks the signature with the sending site's public key (which reached it by
DRS, as the product's site certificates do) and the package file against the signed hash
before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "INSTRUCTION_TYPE",
    "BadInstruction",
    "Instruction",
    "SignedInstruction",
    "SiteKey",
    "decode",
    "sign",
    "verify",
]

INSTRUCTION_TYPE = "MICROSOFT|SMS|MINIJOBINSTRUCTION|PACKAGE"


class Instruction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    job_id: int
    send_request_id: str
    pkg_id: str
    version: int
    sender_site: str  # the site that signed it (the hop before the destination)
    dest_site: str
    final_site: str
    package_sha256: str
    package_size: int
    base_version: int = 0  # the package file is a DLT from this version (0: a PCK)
    type: str = INSTRUCTION_TYPE


class SignedInstruction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    body: bytes  # the encoded Instruction, exactly as signed
    signature: bytes


class SiteKey:
    """A site's key pair, kept in ``<server>/keys/site.key`` (created once, owner-only)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        raw = private.public_key().public_bytes_raw()
        self.public_hex = raw.hex()

    @classmethod
    def load_or_create(cls, path: Path) -> SiteKey:
        if path.exists():
            return cls(Ed25519PrivateKey.from_private_bytes(path.read_bytes()))
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes_raw())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return cls(key)


def sign(key: SiteKey, instruction: Instruction) -> bytes:
    body = msgspec.json.encode(instruction)
    return msgspec.json.encode(SignedInstruction(body, key.private.sign(body)))


class BadInstruction(Exception):
    """An instruction that is malformed, unsigned, or signed by another key."""


def decode(data: bytes) -> tuple[Instruction, SignedInstruction]:
    """The instruction (not yet verified) and its signed envelope."""
    try:
        signed = msgspec.json.decode(data, type=SignedInstruction)
        return msgspec.json.decode(signed.body, type=Instruction), signed
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadInstruction(f"malformed or unsigned instruction ({exc})") from exc


def verify(signed: SignedInstruction, public_hex: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(
            signed.signature, signed.body
        )
    except (InvalidSignature, ValueError) as exc:
        raise BadInstruction("the signature does not match the sending site's key") from exc
