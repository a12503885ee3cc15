"""Schemathesis hooks for tests/openapi_fuzz.rs: a generated watch (or a
followed log) would stream until its server-side timeout, so every
generated list or log request is bounded to one second. The documents
themselves are tested as served."""
import schemathesis


@schemathesis.hook
def map_query(ctx, query):
    if query:
        query.pop("follow", None)
        if "watch" in query:
            query["timeoutSeconds"] = 1
    return query
