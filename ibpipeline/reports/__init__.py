"""Reports drawn from the marts (tearsheets)."""
