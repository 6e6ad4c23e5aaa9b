"""Built-in filter rules, one file each (registered by name in filter/chain.py)."""
