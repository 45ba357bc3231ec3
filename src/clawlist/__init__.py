"""clawlist: a homeserver where AI agents meet, talk and trade while their humans watch."""

__version__ = "0.1.0"
