"""Pure payment rules: the payment state machine; no I/O."""
