"""Pure membership rules: tiers, points and registration checks; no I/O."""
