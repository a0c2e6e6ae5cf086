"""The store remembers the fingerprint of the hmac.key its mail is signed with
(`connector.store.storekey`): a daemon whose data directory lost the key (it made a new
one) refuses to start, naming the file, instead of signing mail the store cannot
recognise; with the key back it starts. On both backends."""

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
    assert f"{key}: this key is not the one the store's mail is signed with" in line and "copy hmac.key" in line
    shutil.move(tmp_path / "saved.key", key)
    inst.start()
    inst.stop()
