"""One image across the perception-distortion knob: pd = 0 (faithful) ... 1 (perceptual), RDMD, 4x SR.

Saves ``outputs/pd_sweep/pd_sweep.png``: the measurement, one panel per pd value with its PSNR (distortion, higher
is better) and HaarPSI (perceptual similarity, higher is better) under it, and the ground truth.

    python examples/pd_sweep.py
    python examples/pd_sweep.py --quick
"""

from _common import load_images, load_prior_or_builtin, parse_args, restore

from zsir import io as zio

PDS = (0.0, 0.25, 0.5, 0.75, 1.0)

if __name__ == "__main__":
    args = parse_args(__doc__, dataset="ffhq256", steps=50, quick_steps=10)
    prior, used = load_prior_or_builtin("ffhq")
    name, x = load_images(args.images, "ffhq256", 1, args.size)[0]
    panels, captions = [], []
    for pd in PDS:
        y, res, scores = restore(x, "sr4", "rdmd", prior, 0.05, args.seed, pd=pd, steps=args.steps)
        print(f"pd={pd:.2f}: PSNR {scores['psnr']:.2f} dB, HaarPSI {scores['haarpsi']:.3f}")
        panels.append((f"pd = {pd:g}", res.x[0]))
        captions.append(f"{scores['psnr']:.2f} dB / {scores['haarpsi']:.3f}")
    panels = [("measurement (sr4)", y[0]), *panels, ("ground truth", x[0])]
    captions = ["", *captions, "PSNR / HaarPSI"]
    out = args.out / "pd_sweep" / "pd_sweep.png"
    zio.atomic_write(out, zio.grid_image(panels, tuple(x.shape[-2:]), captions=captions))
    print(f"wrote {out} (prior: {used})")
