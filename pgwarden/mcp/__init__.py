"""pgwarden's MCP endpoint: agents that speak the Model Context Protocol get the same governance.

Each tool call that touches the database runs as a real pgwarden session (`sessions`): the
statement goes over the PostgreSQL protocol to a `ClientConnection` of the running pgwarden,
so the analysis, policies, plugins, masking, limits and records are the wire path's own. There
is one path to secure, not two.
"""
