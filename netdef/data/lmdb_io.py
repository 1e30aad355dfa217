"""LMDB databases of Datum records, opened and written as Caffe's ``db_lmdb.cpp`` does.

Reading walks one read-only transaction with a cursor, so records come in key order (the
order Caffe's Data layer and ``compute_image_mean`` see them) and memory stays constant
however large the database is. Writing buffers up to a commit's worth of records and, like
Caffe's ``LMDBTransaction::Commit``, doubles the map size and retries the commit when LMDB
reports the map full, so a database starts small instead of reserving a huge fixed map.
Several processes may fill one database (:class:`LmdbBatchWriter`): LMDB runs one write
transaction at a time, whichever process holds it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import lmdb
from google.protobuf.message import DecodeError

from netdef.errors import DataSourceError, SourceLocation
from netdef.proto import netdef_pb2 as pb

#: The first map size of a new database; a commit that does not fit doubles it.
INITIAL_MAP_SIZE = 16 << 20


def open_lmdb(path: str | os.PathLike[str], *, readahead: bool = True) -> lmdb.Environment:
    """Open an LMDB directory read-only, with Caffe's fallback to no locking where locks cannot be made.

    Caffe opens with ``MDB_RDONLY`` and, when the lock file is not writable (a database on
    a read-only mount), retries with ``MDB_NOLOCK`` (``ALLOW_LMDB_NOLOCK``); so does this.
    A missing path, a plain file or a directory without an LMDB raises :class:`DataSourceError`;
    so does a second open of the same database in one process, which LMDB forbids.
    """
    where = SourceLocation(os.fspath(path))
    directory = Path(path)
    if not directory.exists():
        raise DataSourceError("the LMDB database does not exist", location=where)
    if not directory.is_dir():
        raise DataSourceError("not an LMDB database: an LMDB is a directory holding data.mdb", location=where)
    if not (directory / "data.mdb").is_file():
        raise DataSourceError("not an LMDB database: the directory has no data.mdb", location=where)
    lock_file = directory / "lock.mdb"
    lock = os.access(lock_file if lock_file.exists() else directory, os.W_OK)
    try:
        return lmdb.open(os.fspath(directory), readonly=True, lock=lock, readahead=readahead)
    except lmdb.InvalidError:
        raise DataSourceError("not an LMDB database: data.mdb is not an LMDB file", location=where) from None
    except lmdb.Error as error:
        raise DataSourceError(f"cannot open the LMDB database: {error}", location=where) from None


def iter_records(path: str | os.PathLike[str]) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, serialized value) in key order, from one read transaction, in constant memory."""
    env = open_lmdb(path)
    try:
        with env.begin(buffers=False) as txn:
            yield from txn.cursor()
    finally:
        env.close()


def iter_datums(path: str | os.PathLike[str]) -> Iterator[tuple[bytes, pb.Datum]]:
    """Every (key, Datum) in key order; a value that is not a Datum raises :class:`DataSourceError` naming its key."""
    for key, value in iter_records(path):
        yield key, parse_datum(value, key, path)


def parse_datum(value: bytes, key: bytes, path: str | os.PathLike[str]) -> pb.Datum:
    """One record's value as a Datum, or an error that says which record of which database is bad."""
    try:
        return pb.Datum.FromString(value)
    except DecodeError as error:
        raise DataSourceError(
            f"record {key.decode(errors='replace')!r} is not a Datum: {error}", location=SourceLocation(os.fspath(path))
        ) from None


def count(path: str | os.PathLike[str]) -> int:
    """The number of records, from LMDB's own statistics (no walk over the data)."""
    env = open_lmdb(path)
    try:
        return int(env.stat()["entries"])
    finally:
        env.close()


class LmdbWriter:
    """A new LMDB filled in batches of records, each batch one transaction (Caffe's ``LMDBTransaction``).

    Each record goes into the open transaction as it is put, so the copying overlaps with
    whatever produces the records; the batch is also kept until its commit, because when the
    map is full the transaction is lost: it is replayed into a map twice the size, as
    Caffe's ``Commit`` does. Commits are not synced to disk one by one: the writer is meant
    for a database that is renamed into place only once complete (``convert_imageset``), so
    :meth:`close` syncs once and a crash before it loses nothing a reader could have seen.
    """

    def __init__(self, path: str | os.PathLike[str], map_size: int | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir()  # Caffe's NEW mode: the directory must not exist yet
        self.map_size = map_size or INITIAL_MAP_SIZE
        self._env = lmdb.open(os.fspath(self.path), map_size=self.map_size, sync=False, metasync=False, meminit=False)
        self._txn: lmdb.Transaction | None = None
        self._pending: list[tuple[bytes, bytes]] = []

    def put(self, key: bytes, value: bytes | memoryview) -> None:
        """Add one record to the current batch; a view's bytes are copied, the view may change afterwards."""
        record = (key, value if isinstance(value, bytes) else bytes(value))
        self._pending.append(record)
        try:
            self._transaction().put(*record)
        except lmdb.MapFullError:
            self._grow_and_replay()

    def commit(self) -> None:
        """Make the current batch durable in the database (not yet synced) and start a new one."""
        while self._txn is not None:
            try:
                self._txn.commit()
                self._txn = None
            except lmdb.MapFullError:
                self._txn = None  # a failed commit has aborted the transaction
                self._grow_and_replay()
        self._pending.clear()

    def _transaction(self) -> lmdb.Transaction:
        if self._txn is None:
            self._txn = self._env.begin(write=True)
        return self._txn

    def _grow_and_replay(self) -> None:
        """Double the map (Caffe's ``DoubleMapSize``) and write the batch again, until it fits."""
        while True:
            if self._txn is not None:
                self._txn.abort()
                self._txn = None
            self.map_size *= 2
            self._env.set_mapsize(self.map_size)
            try:
                txn = self._transaction()
                for key, value in self._pending:
                    txn.put(key, value)
                return
            except lmdb.MapFullError:
                continue

    def close(self) -> None:
        """Commit the current batch, flush the database to disk and close it."""
        self.commit()
        self._env.sync(True)
        self._env.close()

    def abort(self) -> None:
        """Close without committing the current batch (the caller discards the directory)."""
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        self._pending.clear()
        self._env.close()


class LmdbBatchWriter:
    """One of several processes adding records to a database that :class:`LmdbWriter` created.

    LMDB's lock file lets one write transaction run at a time across processes, so each
    process prepares a batch first and holds the lock only while copying it in, one
    transaction per batch. A batch that does not fit doubles the map and is written again
    (Caffe's ``DoubleMapSize``); a process whose map another one has grown past its own
    adopts the new size (LMDB's ``MDB_MAP_RESIZED``). Nothing is synced or closed here: the
    creating process syncs once all writers have exited (:meth:`LmdbWriter.close`), and a
    writer's handle lives as long as its process.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # map_size=0: start from the database's own size. create=False: a writer that starts
        # after the database was discarded must not make it again.
        self._env = lmdb.open(os.fspath(path), map_size=0, create=False, sync=False, metasync=False, meminit=False)

    def put_batch(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Add every record in one transaction."""
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for key, value in records:
                        txn.put(key, value)
                return
            except lmdb.MapFullError:
                self._env.set_mapsize(self._env.info()["map_size"] * 2)
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)  # 0: take the size the database has now
