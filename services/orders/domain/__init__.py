"""Pure order rules: pricing and the order state machine; no I/O."""
