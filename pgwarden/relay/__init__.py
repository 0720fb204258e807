"""Sans-IO session relay: state, verdict ordering and result shapes; no sockets, no Twisted."""
