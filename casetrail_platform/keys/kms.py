"""The production KEK adapter: a key held by a KMS or HSM, used through its encrypt/decrypt.

``KmsKeyEncryptionKey`` takes the two remote calls as plain functions, so any KMS fits:

* AWS KMS: ``encrypt(plaintext, context)`` = ``kms.encrypt(KeyId=arn, Plaintext=plaintext,
  EncryptionContext={"casetrail": context.hex()})["CiphertextBlob"]``, ``decrypt`` likewise;
* Google Cloud KMS / Azure Key Vault: ``encrypt``/``decrypt`` with ``context`` as the
  additional authenticated data;
* Vault transit: ``encrypt/<name>`` with ``context`` as the derivation context.

The KMS never hands out the KEK, its audit log records every unwrap, and destroying a client's
data key (the only copy of it is wrapped) erases that client even from backups of the key table
once no other copy of the KEK exists. Calls are synchronous: a keyring caches what it unwraps
and asks only on a miss. A failed call must raise; it is reported as ``KeyUnavailableError``.
"""

from __future__ import annotations

from collections.abc import Callable

from casetrail_platform.keys.port import KeyEncryptionKey, KeyUnavailableError

RemoteCall = Callable[[bytes, bytes], bytes]
"""``(payload, context) -> result``: the KMS's encrypt or decrypt."""


class KmsKeyEncryptionKey(KeyEncryptionKey):
    def __init__(self, key_id: str, encrypt: RemoteCall, decrypt: RemoteCall) -> None:
        self._key_id = key_id
        self._encrypt = encrypt
        self._decrypt = decrypt

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        return self._call(self._encrypt, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return self._call(self._decrypt, wrapped, context)

    def _call(self, call: RemoteCall, payload: bytes, context: bytes) -> bytes:
        try:
            return call(payload, context)
        except Exception as error:
            raise KeyUnavailableError(f"KMS key {self._key_id}") from error
