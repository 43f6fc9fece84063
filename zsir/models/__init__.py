"""Networks defined by zsir itself (NDR-Restore, the built-in prior) and their training."""
