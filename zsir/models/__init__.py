"""Networks defined by zsir itself (the built-in prior's architectures, NDR-Restore) and their training."""

from zsir.models.builtin import build_model, load_builtin_prior, load_shipped
from zsir.models.convnets import ResUNet, UnshuffleCNN
from zsir.models.ndr import NDRConfig, NDRRestore

__all__ = ["NDRRestore", "NDRConfig", "ResUNet", "UnshuffleCNN", "build_model", "load_builtin_prior", "load_shipped"]
