"""``promptsep separate`` and ``promptsep train separator``: thin commands over separation/."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from encoders.audio_io import load_audio, save_audio
from encoders.errors import PromptError, PromptsepError, SettingError

if TYPE_CHECKING:
    from separation.inference import InferenceConfig


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def probability(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0.0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text}")
    return value


def _wet_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"bad wet range {text!r}: use LO,HI, e.g. 0.1,0.8") from error
    if not 0.0 <= low <= high < 1.0:
        raise argparse.ArgumentTypeError(f"bad wet range {text!r}: need 0 <= LO <= HI < 1")
    return low, high


def _parse_span(text: str) -> tuple[float, float]:
    try:
        start, end = (float(x) for x in text.split(":"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"bad span {text!r}: use START:END in seconds, e.g. 1.5:4") from error
    return start, end


def add_shard_writer_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that writes training shards shares: data, output folder, budget, size, seed, device."""
    parser.add_argument("--data", default="data", help="data-engine folder (promptsep data build)")
    parser.add_argument("--out", required=True, type=Path, help="shard folder")
    parser.add_argument("--shards", type=int, default=0, help="stop after this many shards (0: no limit)")
    parser.add_argument("--minutes", type=float, default=0.0, help="stop after this many minutes (0: no limit)")
    parser.add_argument("--shard-size", type=int, default=16, help="mixtures per shard")
    parser.add_argument("--seed", type=int, default=1, help="random seed (also names the shards; use one per producer)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--device", default="cpu")


def check_shard_budget(args, command: str) -> None:
    """Refuse a shard writer with neither ``--shards`` nor ``--minutes``: it would never stop."""
    if not args.shards and not args.minutes:
        raise PromptsepError(f"{command} needs --shards N or --minutes M (it would otherwise run forever)")


def register(commands, train_commands) -> None:
    p = commands.add_parser(
        "separate",
        help="separate prompted sounds from audio or video files",
        description=(
            "Separate the prompted sound from each FILE (audio, or a video's soundtrack). Writes "
            "OUT/<name>/target.wav and residual.wav at the input's rate, channels and length "
            "(target_1.wav, target_2.wav, ... with several prompts, plus prompts.json). "
            "With --manifest, reads a JSONL manifest and writes OUT/<id>/ per line."
        ),
    )
    p.add_argument("files", nargs="*", type=Path, help="audio or video files")
    p.add_argument("--prompt", "-p", action="append", default=[], help="text prompt; repeat for several targets")
    p.add_argument("--image", action="append", default=[], type=Path, help="picture of the source (one more target each); the default bundle "
                   "reads emoji-like drawings, not photographs: give a photo's sound as --prompt text instead")
    p.add_argument("--video", action="append", default=[], type=Path, help="video of the source (one more target each)")
    p.add_argument("--span", action="append", default=[], type=_parse_span, help="START:END seconds where the target sounds; applies to every prompt")
    p.add_argument("--manifest", type=Path, help="JSONL manifest (DESIGN.md format) instead of FILE/--prompt")
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder")
    p.add_argument(
        "--candidates", "-k", type=int, default=1,
        help="separate each prompt K times on shifted chunk grids and keep the run the bundle's judge scores highest "
        "(K times slower, held in memory; with 3, level with one run on 600 test mixtures: +0.10 dB mean SI-SDRi)",
    )
    p.add_argument("--bundle", type=Path, default=None, help="model bundle folder (default: the embedded one)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-seconds", type=float, default=None, metavar="S",
                   help="seconds of audio separated at once, in whole chunks (default 32: under 2 GB on a CPU; raise "
                   "it on a GPU for throughput, lower it to save memory)")
    p.add_argument("--plain", action="store_true", help="write the decoded codec output instead of the mixture-consistent masked output")
    p.add_argument("--no-refine", action="store_true", help="use the plain ratio mask even when the bundle has a mask refiner")
    p.add_argument(
        "--splitter-weight",
        type=float,
        default=None,
        metavar="W",
        help="weight of the bundle's splitter (a class-agnostic two-output separator) in each target's mask, "
        "mask^(1-W) * splitter^W (default 0.7, ahead of 0.5 on three test draws; 0 turns it off; see 'The splitter' in benchmarks/RESULTS.md)",
    )
    p.add_argument(
        "--mask-floor",
        type=float,
        default=None,
        metavar="F",
        help="each target keeps at least this fraction of the mixture (0: none; default: the library's, see the README's Usage)",
    )
    p.add_argument(
        "--shifts",
        type=int,
        default=None,
        metavar="S",
        help="separate each chunk S times on shifted latent grids and average the masks (S times slower; default: the library's)",
    )
    p.add_argument(
        "--anchor-threshold",
        type=float,
        default=None,
        metavar="T",
        help="a text prompt is heard as its nearest training phrasing when their similarity is at least T "
        "(-1: always; default: the library's, see 'Unseen wordings' in benchmarks/RESULTS.md)",
    )
    p.add_argument("--no-anchor", action="store_true", help="hear text prompts exactly as typed (no anchoring)")
    p.add_argument(
        "--no-picture-names", action="store_true",
        help="condition on a picture prompt itself even when the bundle's picture namer recognises its sound category",
    )
    p.add_argument(
        "--phrasings",
        type=int,
        default=None,
        metavar="K",
        help="separate an anchored text prompt K times and average the masks: with its anchor, as typed when it is "
        "a new wording, and other training phrasings of its sound (K times the separator's cost; default: the library's)",
    )
    p.add_argument("--steps", type=int, default=None, help="ODE steps for a flow-matching separator")
    p.add_argument("--reference", type=Path, default=None, help="true target (single FILE, single prompt): print the SI-SDR improvement")
    p.add_argument(
        "--spectrogram",
        action="store_true",
        help="also write OUT/<name>/spectrogram.png: the mixture, each target and the residual as mel spectrograms "
        "on one colour scale, to see what moved where",
    )
    p.set_defaults(func=run_separate)

    t = train_commands.add_parser("separator", help="train the separator on data-engine mixtures", description="Train the latent separator (resumable).")
    t.add_argument("--data", default="data", help="data-engine folder (promptsep data build)")
    t.add_argument("--out", default="runs/separator")
    t.add_argument("--objective", choices=["regression", "flow"], default="regression")
    t.add_argument("--steps", type=int, default=20000)
    t.add_argument("--minutes", type=float, default=0.0, help="training-time budget in minutes over all resumes; sets the LR schedule (0: run all steps)")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=4e-4)
    t.add_argument("--pool", type=int, default=2000, help="encoded mixtures kept in the streaming pool")
    t.add_argument("--refresh-every", type=int, default=2, help="draw one fresh on-the-fly mixture every N steps (0: never)")
    t.add_argument("--pool-cache", default="", help="file to keep the encoded initial pool in (reused by later runs with the same codec)")
    t.add_argument(
        "--pool-feed", default="",
        help="folder of encoded mixture shards written beside training by 'promptsep train separator-pool'; new shards join the pool as they appear",
    )
    t.add_argument("--feed-every", type=int, default=20, help="steps between looks into --pool-feed")
    t.add_argument("--threads", type=int, default=2, help="CPU threads")
    t.add_argument("--hidden-dim", type=int, default=256)
    t.add_argument("--num-layers", type=int, default=6)
    t.add_argument(
        "--dropout", type=_fraction, default=None,
        help="dropout on the separator's block branches (default: a resumed or --init model keeps its own; 0 for a new one)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--latent-weight", type=float, default=1.0, help="weight of the L1 loss on latents")
    t.add_argument(
        "--wave-weight", type=float, default=0.2,
        help="weight of -SI-SDR (dB) of the mixture-consistent output through the frozen decoder (0: off)",
    )
    t.add_argument("--wave-items", type=int, default=4, help="examples per batch that get the waveform loss (decoding them is the costly part)")
    t.add_argument("--wave-frames", type=int, default=50, help="latent frames of each example the waveform loss decodes")
    t.add_argument("--warmup", type=int, default=200, help="learning-rate warm-up steps")
    t.add_argument("--codec", default="", help="codec folder (default: the bundle's codec)")
    t.add_argument("--init", default="", help="start from this saved separator folder (e.g. a bundle's separator): its weights, a fresh optimizer and schedule")
    t.add_argument(
        "--decoder-lr", type=float, default=0.0,
        help="also train the codec's decoder at this peak LR (joint fine-tune; the encoder and so the latents stay "
        "fixed; the true latents' masked SI-SDR and mel loss keep it a codec); writes OUT/codec. 0: frozen decoder",
    )
    t.add_argument(
        "--prompt-noise", type=_non_negative, default=0.0,
        help="add Gaussian noise of relative size up to this (e.g. 0.6) to each text prompt's embedding and tokens, "
        "so the separator follows wordings near the training phrasings too (0: off)",
    )
    t.add_argument(
        "--visual-prob", type=probability, default=0.3,
        help="share of examples with a picture whose prompt is that picture instead of a text phrasing "
        "(needs a trained visual tower; default 0.3)",
    )
    t.add_argument(
        "--splice-prob", type=probability, default=0.0,
        help="share of examples made sparse: a first or last part replaced by another mixture in which the "
        "prompted sound is silent (default 0)",
    )
    t.add_argument(
        "--ema", type=_fraction, default=0.0,
        help="also keep an exponential moving average of the weights with this per-step decay (e.g. 0.999) and "
        "write it as OUT/final (0: off, OUT/final is the last weights)",
    )
    t.add_argument(
        "--refiner", default="",
        help="mask refiner folder (promptsep train refiner): the waveform loss scores its refined mask, so the "
        "separator learns to feed it; the refiner stays frozen (default: the plain ratio mask)",
    )
    t.add_argument(
        "--peav", default="",
        help="PE-AV folder whose text and picture embeddings condition the separator (e.g. a 'train encoders' "
        "OUT/bundle; ship the separator with those towers); default: the bundle's peav",
    )
    t.add_argument("--device", default="cpu")
    t.add_argument("--resume", action="store_true", help="continue OUT/checkpoint (its step count, optimizer and schedule)")
    t.set_defaults(func=run_train)

    f = train_commands.add_parser(
        "separator-pool", help="encode fresh training mixtures for a separator run, in another process",
        description="Draw augmented training mixtures, encode them with the frozen codec and write them as shard "
        "files into OUT, where 'promptsep train separator --pool-feed OUT' picks them up. Run it beside training "
        "(e.g. one CPU thread each) so the separator sees new mixtures without spending its own time encoding.",
    )
    add_shard_writer_arguments(f)
    f.add_argument("--codec", default="", help="codec folder (default: the bundle's codec); must be the training run's codec")
    f.add_argument(
        "--reverb-p", type=probability, default=None,
        help="probability that a source gets a synthetic room (default: the data engine's AugmentConfig, 0.4)",
    )
    f.add_argument(
        "--wet", type=_wet_range, default=None,
        help="LO,HI share of the reverberant tail in a roomed source (default 0.1,0.6; 0.8 is about -12 dB "
        "direct-to-reverberant, a far-field source)",
    )
    f.set_defaults(func=run_pool)

    d = train_commands.add_parser(
        "decoder", help="fine-tune the codec decoder for the mixture-consistent output (encoder frozen)",
        description="Fine-tune the codec's decoder on the oracle latents of encoded training mixtures (shards of "
        "'promptsep train separator-pool'): main loss the SI-SDR of the ratio-masked mixture, the codec's mel loss "
        "as a regulariser. The encoder is frozen, so latents, the PE-AV audio tower and separators stay valid. "
        "Writes OUT/codec (fp16 bundle) and a resumable OUT/checkpoint.",
    )
    d.add_argument("--codec", required=True, help="codec folder to start from (the one that encoded the shards)")
    d.add_argument("--feed", action="append", required=True, help="shard folder; repeat for several")
    d.add_argument("--out", default="runs/decoder")
    d.add_argument("--minutes", type=float, default=0.0, help="training-time budget over all resumes; sets the LR schedule")
    d.add_argument("--steps", type=int, default=100000)
    d.add_argument("--batch", type=int, default=8)
    d.add_argument("--frames", type=int, default=50, help="latent frames per example")
    d.add_argument("--lr", type=float, default=1e-4)
    d.add_argument("--mel-weight", type=float, default=1.0, help="weight of the mel loss against -SI-SDR in dB (0: off)")
    d.add_argument("--threads", type=int, default=1, help="CPU threads")
    d.add_argument("--device", default="cpu")
    d.add_argument("--resume", action="store_true", help="continue OUT/checkpoint")
    d.set_defaults(func=run_decoder)

    a = train_commands.add_parser(
        "average", help="average the weights of saved separators",
        description="Write one separator whose weights are the mean of several saved ones of one architecture "
        "(e.g. a resumed run and the separator it started from), as a bundle's separator/ folder.",
    )
    a.add_argument("separators", nargs="+", type=Path, help="saved separator folders (config.json + model.safetensors)")
    a.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per separator, summing to 1 (default: equal)")
    a.add_argument("--out", type=Path, required=True, help="folder to write")
    a.set_defaults(func=run_average)


def _prompts(args) -> list:
    from separation.inference import Prompt

    spans = args.span or None
    prompts = [Prompt(text=t, spans=spans) for t in args.prompt]
    prompts += [Prompt(image=str(i), spans=spans) for i in args.image]
    prompts += [Prompt(video=str(v), spans=spans) for v in args.video]
    return prompts


def _write(result, folder: Path) -> list[Path]:
    from separation.inference import output_names, prompts_json

    folder.mkdir(parents=True, exist_ok=True)
    tracks = [*result.targets, result.residual]
    written = [save_audio(folder / name, track, result.sample_rate) for name, track in zip(output_names(result.prompts), tracks, strict=True)]
    if len(result.prompts) > 1:
        (folder / "prompts.json").write_text(prompts_json(result.prompts))
    return written


def _spectrogram(written: list[Path], prompts, folder: Path) -> Path:
    """``folder/spectrogram.png`` of the written tracks (targets, then the residual), each labelled with its prompt."""
    from app.spectrogram import plot_separation

    labels = [f"{path.stem}: {prompt.describe()}" for path, prompt in zip(written[:-1], prompts, strict=True)]
    labels.append("residual")
    return plot_separation(written, labels, folder / "spectrogram.png")


def _require_prompt_files(prompts) -> None:
    """Every picture and video a prompt names exists (checked before any model loads)."""
    from encoders.prompts import require_prompt_file

    for prompt in prompts:
        for kind, path in (("image", prompt.image), ("video", prompt.video)):
            if isinstance(path, (str, Path)):
                require_prompt_file(path, kind)


def _jobs(args) -> list[tuple[str, Path, list]]:
    """(name, audio path, prompts) per job, validated before any model is loaded."""
    from separation.inference import Prompt

    if args.manifest:
        if args.files or args.prompt:
            raise PromptError("give either --manifest or FILE... with --prompt, not both")
        if not args.manifest.is_file():
            raise PromptError(f"{args.manifest}: no such manifest")
        root, jobs, seen = args.manifest.parent, [], {}
        for number, line in enumerate(args.manifest.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise PromptError(f"{args.manifest}:{number}: not JSON ({error.msg})") from error
            if "audio" not in item:
                raise PromptError(f"{args.manifest}:{number}: no 'audio' field")
            image = root / item["image"] if item.get("image") and not item.get("prompt") else None
            video = root / item["video"] if item.get("video") else None
            prompt = Prompt(text=item.get("prompt"), image=str(image) if image else None, video=video, spans=item.get("spans"))
            try:
                _require_prompt_files([prompt])
            except PromptError as error:
                raise PromptError(f"{args.manifest}:{number}: {error}") from None
            name = str(item.get("id", Path(item["audio"]).stem))
            if name in seen:
                raise PromptError(
                    f"{args.manifest}:{number}: id {name!r} repeats line {seen[name]}; its outputs would overwrite "
                    "that line's (give each line its own id)"
                )
            seen[name] = number
            jobs.append((name, root / item["audio"], [prompt]))
        return jobs
    if not args.files:
        raise PromptError("give audio/video FILEs (or --manifest)")
    prompts = _prompts(args)
    if not prompts:
        raise PromptError("give at least one --prompt, --image or --video")
    _require_prompt_files(prompts)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        raise PromptError(f"no such file: {', '.join(missing)}")
    from encoders.files import distinct_stems

    return [(n, f, prompts) for n, f in zip(distinct_stems(args.files), args.files, strict=True)]


# InferenceConfig fields set by a flag of the same name (``--mask-floor`` for ``mask_floor``) when it is given
CONFIG_FLAGS = ("mask_floor", "splitter_weight", "steps", "batch_seconds", "shifts", "anchor_threshold", "phrasings")


def _inference_config(args) -> InferenceConfig:
    """The separation settings the flags ask for; a value out of range is an error that names its flag."""
    from separation.inference import InferenceConfig

    given = {name: getattr(args, name) for name in CONFIG_FLAGS if getattr(args, name) is not None}
    if args.no_anchor:
        given["anchor_threshold"] = None
    try:
        return InferenceConfig(
            mixture_consistent=not args.plain, refine=not args.no_refine, name_pictures=not args.no_picture_names, **given
        )
    except SettingError as error:
        raise PromptError(error.flag_message()) from None


def run_separate(args) -> int:
    from separation.inference import Separator

    jobs = _jobs(args)
    if args.reference is not None and (len(jobs) != 1 or len(jobs[0][2]) != 1):
        raise PromptError("--reference needs exactly one FILE and one prompt")
    config = _inference_config(args)
    separator = Separator.from_pretrained(args.bundle, device=args.device, config=config)
    _announce_anchors(separator, jobs)
    failures = 0
    for name, path, prompts in tqdm(jobs, desc="separating", unit="file", disable=len(jobs) < 2):
        try:
            if args.candidates == 1 and args.reference is None:  # streamed: memory flat in length
                with tqdm(desc=f"{path.name}", unit="chunk", leave=False, disable=len(jobs) > 1) as bar:

                    def progress(done: int, total: int, bar=bar) -> None:
                        bar.total = total
                        bar.update(done - bar.n)

                    written = separator.separate_file(path, prompts, args.out / name, progress=progress)
            else:
                wav, rate = load_audio(path)
                result = separator.separate(wav, rate, prompts, candidates=args.candidates)
                written = _write(result, args.out / name)
            if args.spectrogram:
                written.append(_spectrogram(written, prompts, args.out / name))
        except PromptsepError as error:
            failures += 1
            tqdm.write(f"promptsep: error: {error}")
            continue
        tqdm.write(f"{path} -> " + ", ".join(str(w) for w in written))
        if args.reference is not None:
            _report_reference(args.reference, wav, rate, result.targets[0])
    if failures:
        print(f"promptsep: {failures} of {len(jobs)} inputs failed")
    return 1 if failures else 0


# Below this similarity to every training phrasing, a prompt names a sound the separator was not trained on: in the
# vocabulary's held-out paraphrases, the nearest phrasing's category was right for 56 % of those under 0.5 (81 % overall).
FAR_PROMPT = 0.5


def _announce_anchors(separator, jobs) -> None:
    """One line per text prompt the separator hears as another wording (its nearest training phrasing), and per
    picture prompt the picture namer names."""
    by_description = {p.describe(): p for _, _, prompts in jobs for p in prompts}
    for described, prompt in by_description.items():
        naming = separator.naming(prompt)
        if naming is not None and naming.name is not None:
            print(f"picture prompt ({described}) is heard as {naming.name!r} (picture namer, margin {naming.margin:.2f}; "
                  f"--no-picture-names keeps the picture)")
    texts = dict.fromkeys(p.text for _, _, prompts in jobs for p in prompts if p.text)
    for text in texts:
        heard = separator.heard_text(text)
        if heard != text:
            anchor = separator.anchor(text)
            print(f"prompt {text!r} is heard as {heard!r} (the nearest training phrasing, similarity "
                  f"{anchor.similarity:.2f}; --no-anchor keeps it as typed)")
            if anchor.similarity < FAR_PROMPT:
                print(f"  note: no sound the separator was trained on is close to {text!r}; "
                      f"the target may be another sound than the one asked for")


def _report_reference(reference: Path, mixture, rate: int, target) -> None:
    from separation.metrics import si_sdr

    truth, _ = load_audio(reference, sample_rate=rate, channels=mixture.shape[0])
    n = min(truth.shape[-1], mixture.shape[-1])
    before = si_sdr(mixture[..., :n], truth[..., :n]).mean().item()
    after = si_sdr(target[..., :n], truth[..., :n]).mean().item()
    print(f"SI-SDR vs {reference.name}: mixture {before:.2f} dB -> target {after:.2f} dB (SI-SDRi {after - before:+.2f} dB)")


def run_pool(args) -> int:
    import dataclasses

    from dataengine.augment import AugmentConfig
    from separation.train import write_pool_shards

    check_shard_budget(args, "train separator-pool")
    augment = AugmentConfig()
    if args.reverb_p is not None:
        augment = dataclasses.replace(augment, reverb_p=args.reverb_p)
    if args.wet is not None:
        augment = dataclasses.replace(augment, wet=args.wet)
    count = write_pool_shards(
        args.data, args.out, args.codec, shard_size=args.shard_size, shards=args.shards, minutes=args.minutes,
        seed=args.seed, threads=args.threads, device=args.device, augment=augment,
    )
    print(f"{count} shards of {args.shard_size} mixtures written to {args.out}")
    return 0


def run_decoder(args) -> int:
    from separation.decoder_tune import DecoderTuneConfig, tune_decoder

    cfg = DecoderTuneConfig(
        codec=args.codec, feeds=args.feed, out=args.out, steps=args.steps, minutes=args.minutes, batch=args.batch,
        frames=args.frames, lr=args.lr, mel_weight=args.mel_weight, threads=args.threads, device=args.device,
    )
    print(f"codec written to {tune_decoder(cfg, resume=args.resume)}")
    return 0


def run_train(args) -> int:
    from separation.train import TrainConfig, train_separator

    cfg = TrainConfig(
        data=args.data, out=args.out, objective=args.objective, steps=args.steps, minutes=args.minutes,
        batch=args.batch, lr=args.lr, pool=args.pool, refresh_every=args.refresh_every, pool_cache=args.pool_cache, threads=args.threads, hidden_dim=args.hidden_dim, num_layers=args.num_layers, dropout=args.dropout,
        seed=args.seed, device=args.device, codec=args.codec, wave_weight=args.wave_weight,
        latent_weight=args.latent_weight, pool_feed=args.pool_feed, feed_every=args.feed_every,
        wave_items=args.wave_items, wave_frames=args.wave_frames, warmup=args.warmup, init=args.init,
        decoder_lr=args.decoder_lr, ema=args.ema, refiner=args.refiner, prompt_noise=args.prompt_noise,
        visual_prob=args.visual_prob, peav=args.peav, splice_prob=args.splice_prob,
    )
    final = train_separator(cfg, resume=args.resume)
    print(f"separator written to {final}")
    return 0


def run_average(args) -> int:
    from separation.model import average_separators

    try:  # a folder without a saved separator raises WeightsError, which the CLI reports as it is
        model = average_separators(args.separators, args.weights)
    except ValueError as error:
        raise PromptError(str(error)) from error
    model.save_pretrained(args.out)
    print(f"average of {len(args.separators)} separators written to {args.out}")
    return 0
