"""RDMD, Gaussian deblurring (std 3 px, sigma_y = 0.05) of ImageNet images with the ImageNet 256 ADM prior.

python examples/imagenet_deblur_rdmd.py
python examples/imagenet_deblur_rdmd.py --quick
"""

from _common import run

if __name__ == "__main__":
    run(
        __doc__,
        dataset="imagenet256",
        prior_name="imagenet",
        task="deblur-gauss",
        sampler="rdmd",
        sigma_y=0.05,
        steps=100,
        quick_steps=4,
        preset="deblur",
        pd=0.5,
    )
