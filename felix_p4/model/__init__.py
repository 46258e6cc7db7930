"""Typed mirror of the dataplane state Felix wants: plain data, no P4 and no I/O."""
