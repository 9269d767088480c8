"""``promptsep train refiner-pool`` and ``promptsep train refiner``: the mask refiner's data and training."""

from __future__ import annotations

from app.cmd_separate import add_shard_writer_arguments, check_shard_budget
from encoders.errors import PromptsepError


def register(commands, train_commands) -> None:
    del commands  # training only
    f = train_commands.add_parser(
        "refiner-pool", help="write the separator's estimates on fresh mixtures, the mask refiner's training data",
        description="Draw mixtures from a data-engine split, prompt the bundle's frozen separator with a paraphrase of "
        "the target's category (or its source's picture), decode its target and residual estimates, and write "
        "mixture, true target and both estimates as shard files into OUT for 'promptsep train refiner'. "
        "Use --split val for the folder that validates a refiner run.",
    )
    add_shard_writer_arguments(f)
    f.add_argument("--bundle", default="", help="bundle whose codec and separator make the estimates (default: the embedded one)")
    f.add_argument("--split", choices=["train", "val"], default="train", help="which split's sources to mix (train: augmented)")
    f.set_defaults(func=run_pool)

    t = train_commands.add_parser(
        "refiner", help="train the mask refiner on refiner-pool shards",
        description="Train the mask refiner, which corrects the mixture-consistent ratio mask from the mixture's and the "
        "decoded estimates' spectrograms, on shards of 'promptsep train refiner-pool' (resumable). Copy OUT/final to "
        "a bundle's refiner/ folder to use it.",
    )
    t.add_argument("--shards", action="append", required=True, help="shard folder; repeat for several")
    t.add_argument("--val", default="", help="folder of validation shards (refiner-pool --split val)")
    t.add_argument("--out", default="runs/refiner")
    t.add_argument("--minutes", type=float, default=0.0, help="training-time budget over all resumes; sets the LR schedule")
    t.add_argument("--steps", type=int, default=100000)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--channels", type=int, default=256, help="width of the network")
    t.add_argument("--layers", type=int, default=4, help="dilated residual blocks")
    t.add_argument(
        "--tf-channels", type=int, default=0,
        help="add a time-frequency branch (2-D convolutions over frequency and time) of this width; 0: none",
    )
    t.add_argument("--tf-layers", type=int, default=3, help="residual blocks of the time-frequency branch")
    t.add_argument(
        "--tf-freq-layers", type=int, default=0,
        help="then this many blocks dilated along frequency (2, 4, 8, ... bins); on an --init refiner they are grown "
        "at zero, so training starts exactly where it was",
    )
    t.add_argument(
        "--init", default="",
        help="start from this trained refiner folder (e.g. promptsep_assets/default/refiner); its width, depth and "
        "conditioning replace --channels/--layers/--cond, and a --tf-channels branch added to it starts at zero",
    )
    t.add_argument(
        "--crop-seconds", type=float, default=0.0,
        help="train on random crops of this many seconds of each item (cut at the sample rate the shards record; 0: whole items)",
    )
    t.add_argument("--cond", action="store_true", help="condition the refiner on the pooled prompt embedding (FiLM)")
    t.add_argument("--eval-every", type=int, default=200, help="steps between validation measurements")
    t.add_argument("--threads", type=int, default=1, help="CPU threads")
    t.add_argument("--device", default="cpu")
    t.add_argument("--resume", action="store_true", help="continue OUT/checkpoint")
    t.set_defaults(func=run_train)


def run_pool(args) -> int:
    from separation.refiner_train import write_refiner_shards

    check_shard_budget(args, "train refiner-pool")
    count = write_refiner_shards(
        args.data, args.out, args.bundle, split=args.split, shard_size=args.shard_size, shards=args.shards,
        minutes=args.minutes, seed=args.seed, threads=args.threads, device=args.device,
    )
    print(f"{count} shards of {args.shard_size} mixtures written to {args.out}")
    return 0


def run_train(args) -> int:
    from separation.refiner_train import RefinerTrainConfig, train_refiner

    cfg = RefinerTrainConfig(
        shards=tuple(args.shards), val=args.val, out=args.out, steps=args.steps, minutes=args.minutes,
        batch=args.batch, lr=args.lr, channels=args.channels, layers=args.layers, tf_channels=args.tf_channels,
        tf_layers=args.tf_layers, tf_freq_layers=args.tf_freq_layers, init=args.init, crop_seconds=args.crop_seconds, cond=args.cond, eval_every=args.eval_every,
        threads=args.threads, device=args.device,
    )
    try:
        final = train_refiner(cfg, resume=args.resume)
    except FileNotFoundError as error:
        raise PromptsepError(str(error)) from error
    print(f"refiner written to {final}")
    return 0
