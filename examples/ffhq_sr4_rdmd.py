"""RDMD, 4x bicubic super-resolution of FFHQ faces (sigma_y = 0.05), with the FFHQ ADM prior (RDMD's setting).

python examples/ffhq_sr4_rdmd.py            # 2 faces, 256 x 256, 100 steps
python examples/ffhq_sr4_rdmd.py --quick    # one 64 x 64 image, 4 steps
"""

from _common import run

if __name__ == "__main__":
    run(
        __doc__,
        dataset="ffhq256",
        prior_name="ffhq",
        task="sr4",
        sampler="rdmd",
        sigma_y=0.05,
        steps=100,
        quick_steps=4,
        preset="sr",
        pd=0.5,
    )
