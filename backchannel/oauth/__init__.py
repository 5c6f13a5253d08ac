"""Protocol logic: no HTTP framework and no SQL text in this package."""
