"""Built-in rewards, one file each (registered by name in scorer/reward.py)."""
