"""`authbus-admin`, the operators' command line (SPEC G4): `cli.py` has the commands,
`connection.py` how they reach authz (over Kafka)."""

from authbus_authz.admin.connection import AdminSettings, connected

__all__ = ["AdminSettings", "connected"]
