"""Tasks: how each family trains and is scored (Notes: DESIGN.md "Tasks"). The Trainer calls them through the
protocol of `dlkit.engine.task`; recipes build them; models know nothing of them."""
