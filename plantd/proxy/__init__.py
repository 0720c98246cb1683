"""The proxy: an HTTP/JSON gateway to a plantd installation (issue 15).

One module per job: :mod:`.routes` (route definitions, parameter checks), :mod:`.api` (the
endpoints), :mod:`.openapi` (the OpenAPI 3.1 document made from the same definitions),
:mod:`.problems` (RFC 9457 errors), :mod:`.sse` (Server-Sent Events), :mod:`.auth` (bearer
tokens), :mod:`.ratelimit`, :mod:`.app` (the aiohttp application), :mod:`.settings` and
:mod:`.daemon` (the daemon on the shared lifecycle). See docs/proxy.md.
"""
