"""PyMongo checks against the server the role set up (run on the app server or
the db host). Reads MONGO_HOST, MONGO_USER, MONGO_PASSWORD from the
environment. Modes: roundtrip, refused, put NAME, get NAME, absent NAME."""

import os
import sys
from urllib.parse import quote_plus

from pymongo import MongoClient
from pymongo.errors import OperationFailure

host = os.environ["MONGO_HOST"]
user = quote_plus(os.environ["MONGO_USER"])
password = quote_plus(os.environ["MONGO_PASSWORD"])
opts = "authSource=admin&authMechanism=SCRAM-SHA-256&directConnection=true&serverSelectionTimeoutMS=10000"
uri = f"mongodb://{user}:{password}@{host}:27017/queuesvc?{opts}"
mode = sys.argv[1]


def coll():
    return MongoClient(uri).queuesvc.verify


def expect_refused(what, operation):
    """Run operation; the server must refuse it (OperationFailure), else exit non-zero."""
    try:
        operation()
    except OperationFailure as exc:
        print(f"{what} refused: code={exc.code}")
    else:
        sys.exit(f"{what} was accepted")


if mode == "roundtrip":
    c = coll()
    c.delete_many({"kind": "roundtrip"})
    ins = c.insert_one({"kind": "roundtrip", "n": 1})
    c.update_one({"_id": ins.inserted_id}, {"$inc": {"n": 41}})
    doc = c.find_one({"_id": ins.inserted_id})
    assert doc and doc["n"] == 42, doc
    assert c.count_documents({"kind": "roundtrip"}) == 1
    c.delete_one({"_id": ins.inserted_id})
    assert c.count_documents({"kind": "roundtrip"}) == 0
    print("roundtrip ok")
elif mode == "refused":
    noauth = MongoClient(
        f"mongodb://{host}:27017/?directConnection=true&serverSelectionTimeoutMS=10000"
    )
    intruder = noauth.queuesvc.verify
    expect_refused("unauthenticated insert", lambda: intruder.insert_one({"kind": "intruder"}))
    expect_refused("unauthenticated find", lambda: intruder.find_one({}))
    bad = MongoClient(f"mongodb://{user}:wrong-password@{host}:27017/queuesvc?{opts}")
    expect_refused("wrong password", lambda: bad.queuesvc.verify.find_one({}))
elif mode == "put":
    coll().replace_one({"_id": sys.argv[2]}, {"_id": sys.argv[2], "kind": "marker"}, upsert=True)
    print(f"put {sys.argv[2]}")
elif mode == "get":
    doc = coll().find_one({"_id": sys.argv[2]})
    assert doc is not None, f"{sys.argv[2]} missing"
    print(f"found {sys.argv[2]}")
elif mode == "absent":
    doc = coll().find_one({"_id": sys.argv[2]})
    assert doc is None, f"{sys.argv[2]} still there"
    print(f"absent {sys.argv[2]}")
else:
    sys.exit(f"unknown mode {mode}")
