"""CM4IR, box inpainting (centred half-side box, sigma_y = 0.025) of FFHQ faces with the FFHQ prior.

CM4IR runs 4 steps by default; with a diffusion (MMSE) prior its consistency calls become denoiser calls.

    python examples/ffhq_inpaint_cm4ir.py
    python examples/ffhq_inpaint_cm4ir.py --quick
"""

from _common import run

if __name__ == "__main__":
    run(
        __doc__,
        dataset="ffhq256",
        prior_name="ffhq",
        task="inpaint-box",
        sampler="cm4ir",
        sigma_y=0.025,
        steps=4,
        quick_steps=4,
        pd=0.0,
    )
