"""Built-in plugin ``approve``: interprets ``approve`` rules and holds their statements for a human.

Work in progress (issue 19): the store contract is `pgwarden_plugins.approve.store`.
"""
