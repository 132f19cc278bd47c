"""The `marketplace` command: the local stack, database bootstrap and the launcher."""
