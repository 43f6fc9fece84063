"""Networks defined by zsir itself (NDR-Restore, the built-in prior) and their training."""

from zsir.models.builtin import load_builtin_prior, load_shipped
from zsir.models.ndr import NDRConfig, NDRRestore

__all__ = ["NDRRestore", "NDRConfig", "load_builtin_prior", "load_shipped"]
