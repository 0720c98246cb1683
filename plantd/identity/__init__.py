"""Who may do what: the principal registry, the policy engine, the hash-chained audit log and
the ZAP authenticator. Key files, CURVE socket setup and the caller a worker sees live one
layer down, in ``plantd.security``, so that the client can use them. See docs/security.md.
"""
