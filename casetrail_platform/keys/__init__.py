"""Per-client data keys and the encryption of the catalog's sensitive fields (crypto-shredding).

* ``port``: the key-encryption-key port (KMS-shaped: wrap and unwrap, nothing more) and the
  data-key table port (create, read, destroy a client's wrapped keys; which client a case is of).
* ``file_kek`` / ``kms``: the embedded default (an agency key file in the data directory) and the
  production adapter shape (any KMS's encrypt/decrypt calls).
* ``sqlite`` / ``postgres``: the data-key tables of both backends (one per agency, shared by
  every service, since every service decrypts every other's events).
* ``keyring``: a client's current data key, with a small cache.
* ``rotation``: re-wrapping every data key by a new KEK (``casetrail keys rotate-kek``).
* ``fields``: sealing and opening the fields marked ``x-casetrail-sensitive`` (README,
  "Erasure and keys", documents the ciphertext encoding subscribers see).
"""
