"""Study storages: the default SQLite file in the artifact store, and RDB storages with heartbeats."""

from __future__ import annotations

from ragopt.store import ArtifactStore
from ragopt.tuning.study import default_storage, make_storage


def test_default_storage_is_an_sqlite_file_in_the_store(tmp_path):
    url = default_storage(ArtifactStore(tmp_path / "idx"))
    assert url == f"sqlite:///{(tmp_path / 'idx' / 'studies.db').resolve()}"


def test_storages_send_heartbeats_unless_disabled(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    with_hb = make_storage(url, heartbeat=2)
    assert with_hb.get_heartbeat_interval() == 2 and with_hb.grace_period == 6
    assert make_storage(url, heartbeat=None).get_heartbeat_interval() is None
