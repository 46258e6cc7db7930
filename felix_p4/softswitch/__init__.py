"""Embedded software target: P4Runtime server, table store and the pipeline's behavioural model."""
