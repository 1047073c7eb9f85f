#!/usr/bin/env python3
"""An independent implementation of the sealed model container, written from the specification in
crates/cloak-crypto/README.md (not from the Rust code), to prove the specification is complete and
the Rust implementation follows it.

  cloak_container.py open  CONTAINER KEYFILE OUT   decrypt and authenticate; exit 1 on failure
  cloak_container.py seal  MODEL KEYFILE NAME CHUNK_SIZE OUT

Needs the `cryptography` package (AES-GCM); HKDF and HMAC come from the standard library.
"""

import hashlib
import hmac
import os
import struct
import sys
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"\x89CLOAK\r\n"
HEADER_LEN = 256
TAG_OFFSET = 0xE0
LABEL_LEN = 20
GCM_TAG_LEN = 16


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt or b"\0" * 32, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def read_key(path: str) -> bytes:
    lines = [
        line.strip()
        for line in open(path, encoding="utf-8").read().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    (line,) = lines
    prefix = "cloak-model-key-v1:"
    assert line.startswith(prefix), "not a key line"
    key = bytes.fromhex(line[len(prefix):])
    assert len(key) == 32
    return key


def key_id(key: bytes) -> bytes:
    return hkdf_sha256(b"", key, b"cloak-model/v1 key-id", 16)


def file_keys(key: bytes, file_id: bytes):
    body = hkdf_sha256(file_id, key, b"cloak-model/v1 body-key", 32)
    header = hkdf_sha256(file_id, key, b"cloak-model/v1 header-key", 32)
    prefix = hkdf_sha256(file_id, key, b"cloak-model/v1 nonce-prefix", 7)
    return AESGCM(body), header, prefix


def nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")


def chunk_count(length: int, chunk: int) -> int:
    return max(1, -(-length // chunk))


def open_container(data: bytes, key: bytes) -> bytes:
    if len(data) < HEADER_LEN or data[:8] != MAGIC:
        raise ValueError("not a container")
    header = data[:HEADER_LEN]
    version, algorithm, chunk, length, _created = struct.unpack(">HHIQQ", header[8:32])
    if version != 1 or algorithm != 1:
        raise ValueError("unsupported version or algorithm")
    kid, file_id, sha = header[0x20:0x30], header[0x30:0x40], header[0x40:0x60]
    if kid != key_id(key):
        raise ValueError("wrong key")
    aead, header_key, prefix = file_keys(key, file_id)
    expected_tag = hmac.new(header_key, header[:TAG_OFFSET], hashlib.sha256).digest()
    if not hmac.compare_digest(expected_tag, header[TAG_OFFSET:]):
        raise ValueError("header authentication failed")
    count = chunk_count(length, chunk)
    if len(data) != HEADER_LEN + count * (LABEL_LEN + GCM_TAG_LEN) + length:
        raise ValueError("wrong length")
    out, pos = bytearray(), HEADER_LEN
    for index in range(count):
        size = min(chunk, length - index * chunk)
        label = file_id + struct.pack(">I", index)
        record = data[pos : pos + LABEL_LEN + size + GCM_TAG_LEN]
        pos += len(record)
        if record[:LABEL_LEN] != label:
            raise ValueError(f"chunk {index}: wrong label")
        try:
            out += aead.decrypt(nonce(prefix, index, index == count - 1), record[LABEL_LEN:], label)
        except InvalidTag:
            raise ValueError(f"chunk {index} failed authentication") from None
    if hashlib.sha256(out).digest() != sha:
        raise ValueError("digest mismatch")
    return bytes(out)


def seal_container(model: bytes, key: bytes, name: str, chunk: int) -> bytes:
    file_id = os.urandom(16)
    aead, header_key, prefix = file_keys(key, file_id)
    count = chunk_count(len(model), chunk)
    body = bytearray()
    for index in range(count):
        label = file_id + struct.pack(">I", index)
        plain = model[index * chunk : (index + 1) * chunk]
        body += label + aead.encrypt(nonce(prefix, index, index == count - 1), plain, label)
    header = MAGIC + struct.pack(">HHIQQ", 1, 1, chunk, len(model), int(time.time()))
    header += key_id(key) + file_id + hashlib.sha256(model).digest()
    header += name.encode("ascii").ljust(128, b"\0")
    assert len(header) == TAG_OFFSET
    header += hmac.new(header_key, header, hashlib.sha256).digest()
    return header + bytes(body)


def main() -> int:
    command, *args = sys.argv[1:]
    if command == "open":
        container, keyfile, out = args
        try:
            plaintext = open_container(open(container, "rb").read(), read_key(keyfile))
        except ValueError as error:
            print(f"rejected: {error}", file=sys.stderr)
            return 1
        open(out, "wb").write(plaintext)
        return 0
    if command == "seal":
        model, keyfile, name, chunk, out = args
        sealed = seal_container(open(model, "rb").read(), read_key(keyfile), name, int(chunk))
        open(out, "wb").write(sealed)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
