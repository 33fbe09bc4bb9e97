"""Dump and restore MongoDB databases through the wire protocol with PyMongo.

For servers without mongodump/mongorestore (the mongoeco emulator of the
offline lab); on MongoDB itself the role uses mongodump and mongorestore.

  mongodb_export.py dump    --config CONF --out ARCHIVE.tar.gz
  mongodb_export.py restore --config CONF --archive ARCHIVE.tar.gz [--drop]

CONF is JSON: {"uri": ..., "databases": [...]}; the URI carries the
credentials, so the file is mode 0600. An archive holds, per collection, one
file of canonical Extended JSON documents and one of index definitions.
Restores write in batches of bulk upserts keyed by _id (fast on the
emulator, and safe to repeat).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import time
from pathlib import Path

from bson import json_util
from pymongo import MongoClient, ReplaceOne

BATCH = 500
OPTS = json_util.CANONICAL_JSON_OPTIONS


def client(conf: dict) -> MongoClient:
    return MongoClient(conf["uri"], serverSelectionTimeoutMS=10000)


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def dump(conf: dict, out: Path) -> None:
    cl = client(conf)
    tmp = out.with_name(out.name + ".part")
    count = 0
    with tarfile.open(tmp, "w:gz") as tar:
        for db_name in conf["databases"]:
            db = cl[db_name]
            for coll_name in sorted(db.list_collection_names()):
                lines = [
                    json_util.dumps(doc, json_options=OPTS)
                    for doc in db[coll_name].find({}).sort("_id", 1)
                ]
                count += len(lines)
                add(
                    tar,
                    f"{db_name}/{coll_name}.jsonl",
                    ("\n".join(lines) + "\n" if lines else "").encode(),
                )
                indexes = [
                    {
                        "keys": list(ix["key"].items()),
                        "unique": bool(ix.get("unique", False)),
                        "name": ix["name"],
                    }
                    for ix in db[coll_name].list_indexes()
                    if ix["name"] != "_id_"
                ]
                add(tar, f"{db_name}/{coll_name}.indexes.json", json.dumps(indexes).encode())
    tmp.rename(out)
    print(f"dumped {count} documents of {', '.join(conf['databases'])} to {out}")


def restore(conf: dict, archive: Path, drop: bool) -> None:
    cl = client(conf)
    count = 0
    with tarfile.open(archive, "r:gz") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        for m in (m for m in members if m.name.endswith(".jsonl")):
            db_name, coll_file = m.name.split("/", 1)
            if db_name not in conf["databases"]:
                continue
            coll = cl[db_name][coll_file.removesuffix(".jsonl")]
            if drop:
                coll.drop()
            data = tar.extractfile(m).read().decode()
            docs = [json_util.loads(line) for line in data.splitlines() if line.strip()]
            for i in range(0, len(docs), BATCH):
                batch = docs[i : i + BATCH]
                coll.bulk_write(
                    [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in batch], ordered=False
                )
            count += len(docs)
            ix_member = m.name.removesuffix(".jsonl") + ".indexes.json"
            try:
                indexes = json.loads(tar.extractfile(ix_member).read())
            except KeyError:
                indexes = []
            for ix in indexes:
                coll.create_index(
                    [tuple(k) for k in ix["keys"]], unique=ix["unique"], name=ix["name"]
                )
    print(f"restored {count} documents from {archive}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("dump", "restore"))
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--out", type=Path)
    p.add_argument("--archive", type=Path)
    p.add_argument("--drop", action="store_true", help="drop each collection before restoring it")
    a = p.parse_args()
    conf = json.loads(a.config.read_text(encoding="utf-8"))
    if a.action == "dump":
        if not a.out:
            sys.exit("dump needs --out")
        dump(conf, a.out)
    else:
        if not a.archive:
            sys.exit("restore needs --archive")
        restore(conf, a.archive, a.drop)


if __name__ == "__main__":
    main()
