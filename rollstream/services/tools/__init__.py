"""Tools a user runs from the CLI (`rollstream tap|record|replay|topics|control`): the CLI is
their only caller; the stages never import them."""
