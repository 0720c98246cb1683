"""What every plantd socket needs to be secure, below the client: key files (``keys``), CURVE
socket setup and handshake diagnostics (``curve``), the authenticated caller a worker sees
(``caller``) and the errors of it all. The registry, policy, audit and the ZAP authenticator
that decide *who* may do *what* live above, in ``plantd.identity``.
"""
