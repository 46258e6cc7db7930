"""Benchmarks of felix-p4 against a null P4Runtime server, a raw writer and the embedded target."""
