"""The store remembers which `hmac.key` signs its mail (issue 13, an outside test).

The key in the data directory signs our Message-IDs and VERP return addresses;
a reply or bounce is recognised by that signature. Several nodes on one
PostgreSQL store must have the same key (the README says to copy it): a node
started without it made a key of its own, delivered mail signed with it, and
the other nodes refused the bounces of that mail (550, not ours). The first
daemon on a store records the key's fingerprint; a daemon whose key differs
refuses to start, in one line naming the file (`check` raises KeyMismatch).
A store made before this records the key of the first daemon that starts on it.
"""

import hashlib
import hmac
import time
from pathlib import Path

from connector.store import dialect
from connector.store.db import KEY_FILE
from connector.store.models import StoreKey, database

NAME = "hmac"


def fingerprint(key):
    """A short public fingerprint of the key (never the key)."""
    return hmac.new(key, b"connector store key fingerprint", hashlib.sha256).hexdigest()[:16]


class KeyMismatch(Exception):
    def __init__(self, path, ours, theirs):
        where = "copy hmac.key from the data directory of a node that runs on this store (every node needs " \
            "the same key)" if dialect.is_postgres() else "restore this store's hmac.key from its backup"
        super().__init__(
            f"{path}: this key is not the one the store's mail is signed with (fingerprint {ours}, the "
            f"store's {theirs}; it signs the Message-IDs and return addresses that replies and bounces are "
            f"recognised by): {where}; if that key is lost for good, `connector db take-key` makes the "
            "store take this one")


def take(key):
    """The store takes `key` as its own: (the fingerprint it had or None, the new one)."""
    row = StoreKey.get_or_none(StoreKey.name == NAME)
    ours = fingerprint(key)
    with database.atomic():
        StoreKey.delete().where(StoreKey.name == NAME).execute()
        StoreKey.insert(name=NAME, fingerprint=ours, set_at=time.time()).execute()
    return (row.fingerprint if row else None), ours


def check(key, data_dir, now):
    """Record the key's fingerprint if the store has none; KeyMismatch if it has another."""
    ours = fingerprint(key)
    with database.atomic():
        StoreKey.insert(name=NAME, fingerprint=ours, set_at=now).on_conflict_ignore().execute()
    theirs = StoreKey.get_by_id(NAME).fingerprint
    if theirs != ours:
        raise KeyMismatch(Path(data_dir) / KEY_FILE, ours, theirs)
