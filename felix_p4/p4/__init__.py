"""P4Runtime side: P4Info schema by name, entry values, client and sync engine."""
