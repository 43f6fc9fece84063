"""CM4IR, 2x super-resolution of 64 x 64 ImageNet images (sigma_y = 0.05) with the ImageNet-64 consistency model.

With the real prior it uses the CM4IR paper preset ``imagenet64-sr2-0.05``; with the built-in fallback, pd = 0.

    python examples/imagenet64_sr2_cm4ir.py
    python examples/imagenet64_sr2_cm4ir.py --quick
"""

from _common import run

if __name__ == "__main__":
    run(
        __doc__,
        dataset="imagenet256",
        prior_name="imagenet64-cm",
        task="sr2",
        sampler="cm4ir",
        sigma_y=0.05,
        steps=4,
        quick_steps=4,
        preset="imagenet64-sr2-0.05",
        pd=0.0,
        size=64,
    )
