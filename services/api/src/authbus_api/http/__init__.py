"""The api's HTTP adapters: they translate between HTTP and the core's values, and decide
nothing themselves (the access decision is `core/access.py`)."""
