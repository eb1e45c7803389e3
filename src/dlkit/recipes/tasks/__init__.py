"""Task objects shared by recipes (the Trainer calls them; see dlkit.engine.task)."""
