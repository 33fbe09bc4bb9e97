# Exit 0 when the user logs in with the password, 3 when the login is
# refused, 4 when the server cannot be reached. Reads JSON from stdin:
# {host, port, user, password, source}. Used by the role to decide whether a
# password must be (re)set, so an unchanged password reports no change.
import json
import sys

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

c = json.load(sys.stdin)
try:
    MongoClient(
        c["host"],
        int(c["port"]),
        username=c["user"],
        password=c["password"],
        authSource=c["source"],
        authMechanism="SCRAM-SHA-256",
        directConnection=True,
        serverSelectionTimeoutMS=5000,
    ).admin.command("ping")
except OperationFailure:
    sys.exit(3)
except PyMongoError as exc:
    print(exc, file=sys.stderr)
    sys.exit(4)
