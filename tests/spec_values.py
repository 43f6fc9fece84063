"""Values printed in the specifications (../shared/docs), shared by the tests that check them, and independent
float64 computations of published schedules."""

import numpy as np

# cm4ir.md 1.2 table: (iN, gamma) -> tau_N .. tau_1 (4 decimals)
CM4IR_TAUS = {
    (400, 0.70): (0.8989, 0.8207, 0.6672, 0.2381),
    (250, 0.20): (0.6937, 0.6144, 0.5030, 0.3218),
    (75, 0.01): (0.2528, 0.2335, 0.2123, 0.1885),
    (150, 0.05): (0.4654, 0.4212, 0.3691, 0.3051),
    (125, 0.05): (0.3978, 0.3408, 0.2682, 0.1598),
    (150, 0.20): (0.4654, 0.2447, 0.01, 0.01),
    (50, 0.01): (0.1764, 0.1464, 0.1080, 0.0421),
    (75, 0.02): (0.2528, 0.2125, 0.1615, 0.0812),
    (100, 0.03): (0.3267, 0.2828, 0.2288, 0.1547),
    (250, 0.70): (0.6937, 0.3437, 0.01, 0.01),
}


def ddpm_sigma(t):
    """VE level ``sqrt((1 - abar_t) / abar_t)`` (model units) of the DDPM linear schedule (Ho et al. 2020, section 4:
    ``beta_t`` linear from 1e-4 to 0.02, T = 1000), computed here in float64, independently of zsir's float32 table
    (the two agree to ~3e-5 relative)."""
    abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))[t]
    return np.sqrt((1.0 - abar) / abar)
