"""The store remembers the fingerprint of the hmac.key its mail is signed with
(`connector.store.storekey`): a daemon whose data directory lost the key (it made a new
one) refuses to start, naming the file, instead of signing mail the store cannot
recognise; with the key back it starts, and `db take-key` makes the store take a new one
when its own is lost for good. On both backends."""

import shutil

from conftest import Instance


def test_a_daemon_whose_key_is_not_the_stores_refuses_to_start(tmp_path, sink):
    inst = Instance(tmp_path, sink.port, connector__data_dir="keys")
    inst.start()
    inst.stop()
    key = tmp_path / "keys" / "hmac.key"
    shutil.move(key, tmp_path / "saved.key")
    refused = inst.cli("run", check=False)
    assert refused.returncode == 1, refused
    [line] = refused.stderr.decode().strip().splitlines()
    assert f"{key}: this key is not the one the store's mail is signed with" in line and "db take-key" in line
    shutil.move(tmp_path / "saved.key", key)
    inst.start()
    inst.stop()


def test_db_take_key_makes_the_store_take_a_new_key_when_its_own_is_lost(tmp_path, sink):
    inst = Instance(tmp_path, sink.port, connector__data_dir="keys")
    inst.start()
    inst.stop()
    (tmp_path / "keys" / "hmac.key").unlink()                  # lost for good
    assert inst.cli("run", check=False).returncode == 1
    taken = inst.json("db", "take-key")
    assert taken["fingerprint_before"] and taken["fingerprint"] != taken["fingerprint_before"]
    inst.start()
    inst.stop()
