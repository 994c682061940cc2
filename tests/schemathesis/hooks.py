"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS by run.py).

`POST /v1/catalog` takes NDJSON (one product per line), a media type schemathesis has no
serializer for: its schema is a string, sent as its UTF-8 bytes.
"""
import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return (json.dumps(value) + "\n").encode()
