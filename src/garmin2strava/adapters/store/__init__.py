"""adapters.store."""
