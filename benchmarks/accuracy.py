"""Accuracy and training-throughput runs of the fine-tuning (issue 7's targets). Prints tables, writes JSON.

Sections (``--only`` picks some):
- ``digits``: scikit-learn digits at 1x32x32, one split (seed 0) and one training seed for every row:
  LeNet-5-BN CNN; the adder LeNet-5-BN from scratch; the trained CNN converted (default policy plus
  ``convert_linear``, i.e. the same layers as the zoo's adder LeNet) and fine-tuned with logit KD from it:
  copied weights rescaled to unit std (the CLI's choice), copied as they are, and copied with the adaptive
  LR's eta relative to the weights' scale (ablations of that choice).
- ``sr``: a small VDSR-style net (``--sr-channels`` 16, ``--sr-blocks`` 3) on luminance patches of
  scikit-image's sample images, x2 bicubic degradation, held-out test images. ``--sr-variants`` picks rows:
  adder (AdderSR: self-shortcut + power activation), the same net with convolutions, the ablations without
  shortcut / without power activation / without both, the CNN without its shortcut (to tell what adder
  layers need from what any deep plain net needs), and a fairness row that gives the CNN's body convolutions
  the adder weights' LR multiplier, to show the CNN baseline is not handicapped by the recipe.
  Adder weights train at ``--sr-adder-lr-scale`` times the LR (Adam moves every weight ~lr per step, small
  for adder weights that live on the scale of their inputs).
- ``throughput``: training images/s of ResNet-20 CNN vs adder ResNet-20, same batch, CPU, interleaved.
- ``fashion``: Fashion-MNIST (Debian's ``dataset-fashion-mnist``; ``--fashion-dir`` for another folder of its idx
  files) at 1x32x32, LeNet-5-BN: the CNN from scratch; the adder converted from that trained CNN (the CLI's
  policy) and fine-tuned with logit KD from it; the adder from scratch; post-training quantisation of the
  converted adder at each ``--bits`` x ``--groups``; quantisation-aware fine-tuning of it at each ``--qat-bits`` x
  ``--qat-groups`` (``prepare_qat`` on the post-training rows' grids, the same fine-tuning with KD from the CNN
  for ``--qat-epochs`` at ``--qat-lr``, then ``quantize`` reusing the trained grids). Test accuracy on the
  official test set (10,000), wall time and training images/s per row. ``--epochs`` / ``--kd-epochs`` /
  ``--train-limit`` size it (a smoke run: ``--epochs 1 --kd-epochs 1 --train-limit 2000``); validation is capped
  like the training part.
- ``fashion-resnet``: the same rows for a CIFAR ResNet (``--resnet-depth``, 8 by default: ResNet-20's adder
  trains at ~100 images/s on one CPU thread) at the data's own 28x28, the grey channel repeated for the
  3-channel stem; its own ``--resnet-*`` epochs, training subset and QAT rows, no from-scratch row unless
  ``--resnet-scratch``.

Nothing is asserted: the numbers are the result. Sized for a 2-core CPU (minutes); settings are printed
with the numbers and stored in the JSON.

    python benchmarks/accuracy.py --json benchmarks/results/accuracy.json
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from adderconv import AdaptiveLR, get_model
from adderconv.data import DataSplit, TensorPairs, evaluate, load_data, loader
from adderconv.io import write_json
from adderconv.training import finetune


def _row(name: str, res, extra: dict | None = None) -> dict:
    h = res.history
    return {"model": name, **{k: v for k, v in res.test.items() if k != "n"}, "epochs": len(h),
            "final_train_loss": h[-1]["train_loss"], "train_seconds": sum(e["seconds"] for e in h), **(extra or {})}


def digits(epochs: int, kd_epochs: int, batch: int, lr: float, kd_lr: float, seed: int) -> dict:
    data = load_data("digits", (1, 32, 32), split_seed=0)
    common = dict(batch_size=batch, seed=seed, energy=False, log=print)
    rows = []
    torch.manual_seed(seed)                  # model initialisation (finetune seeds everything after it)
    cnn = finetune(get_model("lenet5_bn"), data, epochs=epochs, lr=lr, **common)
    rows.append(_row("LeNet-5-BN CNN", cnn))
    torch.manual_seed(seed)
    scratch = finetune(get_model("lenet5_bn_adder"), data, epochs=epochs, lr=lr, **common)
    rows.append(_row("adder LeNet-5-BN, from scratch", scratch))
    from adderconv.converters import Policy, convert

    teacher = cnn.model.eval()
    # The zoo adder LeNet's layers (conv2, fc1, fc2; stem and classifier kept). Variants: copied weights
    # rescaled to unit std (what `adderconv finetune` does), copied as they are, and copied with relative eta.
    variants = [("copy_rescaled", False, "copy rescaled to unit std, reference eta (CLI default)"),
                ("copy", False, "copy, reference eta"), ("copy", True, "copy, eta relative to weight RMS")]
    for init, relative, label in variants:
        policy = Policy(convert_linear=True, weight_init=init)
        student = convert(teacher, policy, example_inputs=(torch.zeros(1, 1, 32, 32),))
        res = finetune(student, data, teacher=teacher, epochs=kd_epochs, lr=kd_lr, eta_relative=relative, **common)
        rows.append(_row(f"CNN converted + KD: {label}", res))
    base = rows[0]["acc"]
    for r in rows:
        r["gap_points"] = 100 * (base - r["acc"])
    settings = {"data": data.description, "epochs": epochs, "kd_epochs": kd_epochs, "batch": batch, "lr": lr,
                "kd_lr": kd_lr, "seed": seed, "momentum": 0.9, "weight_decay": 5e-4, "eta": 0.2,
                "kd_alpha": 0.5, "kd_temperature": 4.0, "schedule": "cosine per step"}
    return {"settings": settings, "rows": rows}


class _Scaled(torch.nn.Module):
    """weight = k * original: under Adam (blind to gradient scale) ``original`` steps ~lr, so weight steps ~k*lr,
    i.e. an LR multiplier for one tensor without a second optimizer group."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, w):
        return self.k * w

    def right_inverse(self, w):
        return w / self.k


SR_VARIANTS = {       # key: (row label, SRNet switches); "cnn_fair" also scales the body convs' LR
    "adder": ("adder (AdderSR: shortcut + power)", dict(adder=True)),
    "cnn": ("CNN, same net", dict(adder=False)),
    "no_shortcut": ("adder, no self-shortcut", dict(adder=True, shortcut=False)),
    "no_power": ("adder, no power activation", dict(adder=True, power=False)),
    "plain": ("adder, neither (plain AdderNet)", dict(adder=True, shortcut=False, power=False)),
    "cnn_no_shortcut": ("CNN, no shortcut", dict(adder=False, shortcut=False)),
    "cnn_fair": ("CNN, body conv LR x the adder scale (fairness check)", dict(adder=False)),
}


def sr(epochs: int, batch: int, lr: float, patch: int, limit: int, seed: int, adder_lr_scale: float = 50.0,
       variants: Sequence[str] = ("adder", "cnn", "no_shortcut", "no_power", "cnn_fair"), channels: int = 16,
       blocks: int = 3) -> dict:
    from torch.nn.utils import parametrize

    from adderconv.zoo.sr_net import SRNet

    data = load_data("sr:skimage", (1, patch, patch), split_seed=0, limit=limit)
    rows = []
    for key in variants:
        name, kw = SR_VARIANTS[key]
        torch.manual_seed(seed)
        net = SRNet(channels=channels, blocks=blocks, **kw)
        torch.nn.init.zeros_(net.tail.weight)      # every variant starts as the bicubic input (global residual)
        torch.nn.init.zeros_(net.tail.bias)
        if key == "cnn_fair":                      # the adder recipe's LR multiplier on the CNN's body layers
            for block in net.body:
                parametrize.register_parametrization(block.body, "weight", _Scaled(adder_lr_scale))
        res = finetune(net, data, epochs=epochs, optimizer="adam", lr=lr, adder_lr_scale=adder_lr_scale,
                       weight_decay=0.0, batch_size=batch, seed=seed, energy=False, log=print)
        rows.append(_row(name, res, {"variant": key}))
    bicubic = rows[0]["bicubic_psnr"]
    cnn = next((r["psnr"] for r in rows if r["variant"] == "cnn"), None)
    best_cnn = max((r["psnr"] for r in rows if r["variant"].startswith("cnn")), default=None)
    for r in rows:
        r["gain_over_bicubic_db"] = r["psnr"] - bicubic
        r["gap_to_cnn_db"] = cnn - r["psnr"] if cnn is not None else None
        r["gap_to_best_cnn_db"] = best_cnn - r["psnr"] if best_cnn is not None else None
    settings = {"data": data.description, "net": f"SRNet(channels={channels}, blocks={blocks}), tail conv "
                "zero-initialised", "epochs": epochs, "batch": batch, "lr": lr, "adder_lr_scale": adder_lr_scale,
                "seed": seed, "loss": "L1", "psnr": "over all pixels of the test tiles, no border shave",
                "optimizer": "Adam (0.9, 0.999), no weight decay, cosine, eta 0.2; adder weights at "
                             "adder_lr_scale * lr"}
    return {"settings": settings, "bicubic_psnr": bicubic, "rows": rows}


def throughput(batch: int, steps: int, rounds: int) -> dict:
    """Images/s of full training steps (forward, backward, adaptive LR, SGD), the two models interleaved."""
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    setups = {}
    for name in ("resnet20", "resnet20_adder"):
        m = get_model(name).train()
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        setups[name] = (m, opt, AdaptiveLR(m, eta=0.2))

    def run(name: str) -> float:
        m, opt, alr = setups[name]
        t = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            alr.step(opt)
        return batch * steps / (time.perf_counter() - t)

    for name in setups:
        run(name)                                   # warm-up (kernel selection, allocator)
    rates = {name: [] for name in setups}
    for _ in range(rounds):
        for name in setups:
            rates[name].append(run(name))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"settings": {"batch": batch, "steps_per_round": steps, "rounds": rounds, "threads": torch.get_num_threads(),
                         "device": "cpu"},
            "images_per_s": med, "all_rounds": rates, "adder_over_cnn": med["resnet20_adder"] / med["resnet20"]}


def _train_rate(res) -> float:
    """Training images/s over the run's epochs (images seen / seconds spent in training steps)."""
    h = res.history
    return sum(e["images_per_s"] * e["seconds"] for e in h) / max(sum(e["seconds"] for e in h), 1e-9)


FASHION_NETS = ("fashion", "fashion-resnet")


def _fashion_net(section: str, resnet_depth: int = 8):
    """(name in the rows, CNN factory, adder factory for the from-scratch row, input shape) of a section."""
    if section == "fashion":
        return "LeNet-5-BN", lambda: get_model("lenet5_bn"), lambda: get_model("lenet5_bn_adder"), (1, 32, 32)
    from adderconv.zoo.resnet_cifar import CifarResNet   # the zoo's CIFAR ResNet (ResNet-20 at depth 20)

    # 28x28 is the data's own size (no resampling); the grey channel is repeated for the 3-channel stem
    return (f"ResNet-{resnet_depth}", lambda: CifarResNet(resnet_depth),
            lambda: CifarResNet(resnet_depth, adder=True), (3, 28, 28))


def _fashion_data(folder: str | None, shape: tuple[int, int, int], train_limit: int | None) -> DataSplit:
    """Fashion-MNIST at ``shape``; the training part (a seeded random order) and validation cut to
    ``train_limit`` and ``train_limit // 9`` (the full split's 9:1), the official test set whole."""
    data = load_data(f"fashion-mnist:{folder}" if folder else "fashion-mnist", shape, split_seed=0)
    if train_limit is None:
        return data
    n_val = max(train_limit // 9, 1)
    train = TensorPairs(data.train.x[:train_limit], data.train.y[:train_limit])
    val = TensorPairs(data.val.x[:n_val], data.val.y[:n_val])
    return replace(data, train=train, val=val, description=f"{data.description}; training cut to "
                   f"{len(train)} and validation to {len(val)} (--train-limit)")


def _width(bits: int, groups: int) -> str:
    return ("int8" if bits == 8 else f"{bits}-bit") + (f", {groups} grid groups" if groups != 1 else "")


def fashion(net: str, epochs: int, kd_epochs: int, batch: int, lr: float, kd_lr: float, seed: int,
            train_limit: int | None, bits: Sequence[int] = (8,), groups: Sequence[int] = (1,),
            qat_bits: Sequence[int] = (), qat_groups: Sequence[int] = (1,), qat_epochs: int = 3,
            qat_lr: float = 0.01, scratch: bool = True, resnet_depth: int = 8, calib_batches: int = 8,
            folder: str | None = None) -> dict:
    from adderconv import quantize
    from adderconv.converters import Policy, convert
    from adderconv.quant import prepare_qat

    label, make_cnn, make_adder, shape = _fashion_net(net, resnet_depth)
    t = time.perf_counter()
    data = _fashion_data(folder, shape, train_limit)
    load_seconds = time.perf_counter() - t
    common = dict(batch_size=batch, seed=seed, energy=False, log=print)
    rows: list[dict] = []

    def trained(name: str, model, extra: dict | None = None, **kw):
        t = time.perf_counter()
        res = finetune(model, data, **common, **kw)
        rows.append(_row(name, res, {"wall_seconds": time.perf_counter() - t, "train_images_per_s": _train_rate(res),
                                     **(extra or {})}))
        return res

    torch.manual_seed(seed)
    cnn = trained(f"{label} CNN, from scratch", make_cnn(), epochs=epochs, lr=lr)
    teacher = cnn.model.eval()
    # The CLI's conversion (default policy + convert_linear: the zoo adder net's layers; copied weights
    # rescaled to unit std), then logit KD from the trained CNN.
    student = convert(teacher, Policy(convert_linear=True, weight_init="copy_rescaled"),
                      example_inputs=(torch.zeros(1, *shape),))
    converted = trained(f"adder {label}, converted from the CNN + KD", student, teacher=teacher,
                        epochs=kd_epochs, lr=kd_lr)
    if scratch:
        torch.manual_seed(seed)
        trained(f"adder {label}, from scratch", make_adder(), epochs=epochs, lr=lr)
    # Post-training quantisation of the converted adder at each width x group count (issue 26), calibrated on
    # training batches; quantisation-aware fine-tuning starts from the same grids (the same calibration), so
    # a QAT row and the PTQ row of its width and groups differ only by the fine-tuning.
    float_adder = converted.model.eval()
    float_acc = converted.test["acc"]
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    calib = loader(data.train, order[:calib_batches * batch], batch)

    def tested(q, name: str, b: int, k: int, t: float, extra: dict) -> None:
        acc = evaluate(q, data.test, "classify", batch, torch.device("cpu"))["acc"]
        rows.append({"model": name, "acc": acc, "bits": b, "groups": k, "wall_seconds": time.perf_counter() - t,
                     "gap_to_float_points": 100 * (float_acc - acc), **extra})

    for b in bits:
        for k in groups:
            t = time.perf_counter()
            q = quantize(float_adder, calib, bits=b, groups=k)
            tested(q, f"converted adder, {_width(b, k)} post-training", b, k, t,
                   {"method": "PTQ", "epochs": 0, "train_images_per_s": None})
    for b in qat_bits:
        for k in qat_groups:
            # The converted adder's fine-tuning again (the same finetune, KD from the CNN, adaptive LR), through
            # the fake-quantised grids; quantize then reuses the trained grids (no second calibration).
            t = time.perf_counter()
            res = finetune(prepare_qat(float_adder, calib, bits=b, groups=k), data, teacher=teacher,
                           epochs=qat_epochs, lr=qat_lr, **common)
            q = quantize(res.model.eval(), None, bits=b, groups=k)
            tested(q, f"converted adder, {_width(b, k)} QAT (+{qat_epochs} ep KD)", b, k, t,
                   {"method": "QAT", "epochs": len(res.history), "train_images_per_s": _train_rate(res),
                    "fake_quant_acc": res.test["acc"], "final_train_loss": res.history[-1]["train_loss"],
                    "train_seconds": sum(e["seconds"] for e in res.history)})
    base = rows[0]["acc"]
    for r in rows:
        r["gap_points"] = 100 * (base - r["acc"])
    settings = {"net": f"{label}, input {'x'.join(map(str, shape))}",
                "data": data.description, "load_seconds": load_seconds, "epochs": epochs, "kd_epochs": kd_epochs,
                "batch": batch, "lr": lr, "kd_lr": kd_lr, "seed": seed, "train_limit": train_limit,
                "bits": list(bits), "groups": list(groups), "qat_bits": list(qat_bits),
                "qat_groups": list(qat_groups), "qat_epochs": qat_epochs, "qat_lr": qat_lr,
                "qat": "prepare_qat on the PTQ calibration's grids, KD from the CNN, then quantize(bits, groups)",
                "calibration": f"{calib_batches} training batches of {batch}, percentile 99.99",
                "momentum": 0.9, "weight_decay": 5e-4, "eta": 0.2, "kd_alpha": 0.5, "kd_temperature": 4.0,
                "schedule": "cosine per step", "test": "official test set (t10k), 10,000 images"}
    return {"settings": settings, "rows": rows}


def _print_table(title: str, rows: list[dict], cols: list[str]) -> None:
    print(f"\n{title}")
    print(" | ".join(["model"] + cols))
    for r in rows:
        cells = [f"{r[c]:.4f}" if isinstance(r.get(c), float) else "-" if r.get(c) is None else str(r[c]) for c in cols]
        print(" | ".join([r["model"]] + cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=["digits", "sr", "throughput"],
                    choices=["digits", "sr", "throughput", *FASHION_NETS])
    ap.add_argument("--epochs", type=int, default=15,
                    help="digits, fashion: epochs of the CNN and the adder from scratch")
    ap.add_argument("--kd-epochs", type=int, default=15, help="digits, fashion: epochs of the converted + KD runs")
    ap.add_argument("--train-limit", type=int, default=None,
                    help="fashion: training images (a seeded random subset of the 54,000; validation 1/9 of it)")
    ap.add_argument("--fashion-dir", default=None, help="fashion: a folder of Fashion-MNIST idx files "
                    "(default: Debian's dataset-fashion-mnist)")
    ap.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4], help="fashion*: post-training code widths")
    ap.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4], help="fashion*: grid groups per layer")
    ap.add_argument("--qat-bits", type=int, nargs="*", default=[6, 4],
                    help="fashion: widths of the quantisation-aware fine-tuning rows")
    ap.add_argument("--qat-groups", type=int, nargs="+", default=[1, 4], help="fashion: grid groups of the QAT rows")
    ap.add_argument("--qat-epochs", type=int, default=3, help="fashion: epochs of each QAT fine-tuning")
    ap.add_argument("--qat-lr", type=float, default=0.01, help="fashion*: LR of the QAT fine-tuning")
    ap.add_argument("--resnet-depth", type=int, default=8, help="fashion-resnet: CIFAR ResNet depth (6n+2)")
    ap.add_argument("--resnet-epochs", type=int, default=3, help="fashion-resnet: epochs of the CNN")
    ap.add_argument("--resnet-kd-epochs", type=int, default=3, help="fashion-resnet: epochs of the converted + KD run")
    ap.add_argument("--resnet-train-limit", type=int, default=10000, help="fashion-resnet: training images")
    ap.add_argument("--resnet-qat-bits", type=int, nargs="*", default=[4], help="fashion-resnet: QAT widths")
    ap.add_argument("--resnet-qat-groups", type=int, nargs="+", default=[1], help="fashion-resnet: QAT grid groups")
    ap.add_argument("--resnet-qat-epochs", type=int, default=1, help="fashion-resnet: epochs of each QAT run")
    ap.add_argument("--resnet-scratch", action="store_true", help="fashion-resnet: add the adder from scratch")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--kd-lr", type=float, default=0.1)
    ap.add_argument("--sr-epochs", type=int, default=6)
    ap.add_argument("--sr-batch", type=int, default=32)
    ap.add_argument("--sr-lr", type=float, default=1e-3)
    ap.add_argument("--sr-patch", type=int, default=32)
    ap.add_argument("--sr-limit", type=int, default=2048, help="training patches (a seeded random subset)")
    ap.add_argument("--sr-adder-lr-scale", type=float, default=50.0, help="adder weights' LR / the LR")
    ap.add_argument("--sr-variants", nargs="+", choices=list(SR_VARIANTS),
                    default=["adder", "cnn", "no_shortcut", "no_power", "cnn_fair"])
    ap.add_argument("--sr-channels", type=int, default=16)
    ap.add_argument("--sr-blocks", type=int, default=3)
    ap.add_argument("--tp-batch", type=int, default=32)
    ap.add_argument("--tp-steps", type=int, default=3)
    ap.add_argument("--tp-rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out: dict = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
                 "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    if "digits" in args.only:
        out["digits"] = digits(args.epochs, args.kd_epochs, args.batch, args.lr, args.kd_lr, args.seed)
        _print_table(f"digits ({out['digits']['settings']})", out["digits"]["rows"],
                     ["acc", "gap_points", "epochs", "train_seconds"])
    if "sr" in args.only:
        out["sr"] = sr(args.sr_epochs, args.sr_batch, args.sr_lr, args.sr_patch, args.sr_limit, args.seed,
                       args.sr_adder_lr_scale, args.sr_variants, args.sr_channels, args.sr_blocks)
        _print_table(f"SR x2 (bicubic {out['sr']['bicubic_psnr']:.2f} dB; {out['sr']['settings']})", out["sr"]["rows"],
                     ["psnr", "gain_over_bicubic_db", "gap_to_cnn_db", "gap_to_best_cnn_db", "epochs",
                      "train_seconds"])
    if "throughput" in args.only:
        out["throughput"] = tp = throughput(args.tp_batch, args.tp_steps, args.tp_rounds)
        print(f"\ntraining throughput, batch {args.tp_batch}, CPU ({tp['settings']['threads']} threads): "
              f"ResNet-20 CNN {tp['images_per_s']['resnet20']:.1f} img/s, adder ResNet-20 "
              f"{tp['images_per_s']['resnet20_adder']:.1f} img/s (adder/CNN {tp['adder_over_cnn']:.3f})")
    cols = ["acc", "gap_points", "gap_to_float_points", "epochs", "wall_seconds", "train_images_per_s"]
    if "fashion" in args.only:
        out["fashion"] = fashion("fashion", args.epochs, args.kd_epochs, args.batch, args.lr, args.kd_lr, args.seed,
                                 args.train_limit, args.bits, args.groups, args.qat_bits, args.qat_groups,
                                 args.qat_epochs, args.qat_lr, folder=args.fashion_dir)
        _print_table(f"Fashion-MNIST ({out['fashion']['settings']})", out["fashion"]["rows"], cols)
    if "fashion-resnet" in args.only:
        out["fashion_resnet"] = fashion("fashion-resnet", args.resnet_epochs, args.resnet_kd_epochs, args.batch,
                                        args.lr, args.kd_lr, args.seed, args.resnet_train_limit, args.bits,
                                        args.groups, args.resnet_qat_bits, args.resnet_qat_groups,
                                        args.resnet_qat_epochs, args.qat_lr, scratch=args.resnet_scratch,
                                        resnet_depth=args.resnet_depth, folder=args.fashion_dir)
        res = out["fashion_resnet"]
        _print_table(f"Fashion-MNIST, ResNet-{args.resnet_depth} ({res['settings']})", res["rows"], cols)
    if args.json:
        write_json(args.json, out)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
