"""An example package of user tasks (`--plugins examples` puts it on every stage's path)."""
