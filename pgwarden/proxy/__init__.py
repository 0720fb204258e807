"""The Twisted edges: client listener, upstream connection, back-pressure."""
