"""`make bench`: measures the service on this machine and writes a table and JSON (see README, Performance)."""
