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


@schemathesis.check
def refused_without_credentials(ctx, response, case):
    """With SHOAL_EXPECT_REFUSED set (a run without credentials), every
    answer must be 401 or 403: nothing is served to nobody."""
    import os

    if os.environ.get("SHOAL_EXPECT_REFUSED") and response.status_code not in (401, 403):
        raise AssertionError(
            "%s %s answered %d without credentials"
            % (case.method, case.path, response.status_code)
        )
