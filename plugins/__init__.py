"""pgwarden's built-in behaviours, each an ordinary plugin (installed as ``pgwarden_plugins``).

They are registered through the ``pgwarden`` entry-point group in setup.cfg,
exactly as a third-party plugin would be, and can be disabled by name.
"""
