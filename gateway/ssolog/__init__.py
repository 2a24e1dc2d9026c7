"""The SSO log: who used the gateway for what, in one hash chain.

Every instance appends to the table ``sso_log`` of the shared database.
``entry`` defines the events and the hash, ``store`` appends, purges,
verifies and reads rows, ``writer`` appends the request path's entries in
the background, and handlers queue their entries through ``events``.
"""
