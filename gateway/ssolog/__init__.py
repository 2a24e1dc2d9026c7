"""The SSO log: who used the gateway for what, in one hash chain.

Every instance appends to the table ``sso_log`` of the shared database.
``entry`` defines the events and the hash, and ``store`` appends, purges,
verifies and reads rows.
"""
