"""The Felix side: framing on fds 3/4, payload dispatch, status reporting."""
