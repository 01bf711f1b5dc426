"""Unit quality and stability of several bundles on aligned espeak-ng speech: the table in docs/evaluating-units.md.

Makes speech with exact phone alignments (libespeak-ng's phoneme events, tests/aligned_speech.py),
trains and exports the bundles on one set of sentences, then runs `audiotok evaluate` on another:

* the built-in logmel encoder at k = 50, 100, 500;
* a HuBERT-base-size checkpoint with RANDOM weights (``HubertModel(HubertConfig())``, seed 0) at
  layer 6, k = 100: what the architecture alone gives, not what a trained HuBERT gives;

each as fp32 and int8, evaluated for PNMI, purities, bitrate, UED under noise 20/10 dB, speed
0.9/1.1 and a 160-sample shift, plus fp32 vs int8 and offline vs the default stream setting.
Needs the [train] and [eval] extras. Every step is the CLI a user would run; the JSON reports are
kept in --work.

  python benchmarks/unit_quality.py --work /tmp/unit-quality            # everything (~30 min on 2 busy cores)
  python benchmarks/unit_quality.py --work /tmp/unit-quality --no-hubert
  python benchmarks/unit_quality.py --smoke   # logmel k=16 on 4 + 2 sentences: checks the script in seconds (the suite)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from aligned_speech import write_aligned  # noqa: E402

VOICES = ("en", "en-us", "en-gb-x-rp", "en-029+f3")
TRAIN_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Peter Piper picked a peck of pickled peppers.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "A speech tokenizer turns sound into a sequence of discrete units.",
    "The rain in Spain stays mainly in the plain.",
    "Red lorry, yellow lorry, red lorry, yellow lorry.",
    "Six thick thistle sticks, six thick thistles stick.",
    "We were away a year ago, when the weather was warm.",
    "Bright blue birds bring bread back before breakfast.",
    "Unique New York, you know you need unique New York.",
    "The early bird catches the worm, but the second mouse gets the cheese.",
    "Fresh fried fish, fish fresh fried, fried fish fresh.",
    "Good morning, how are you today? I am fine, thank you very much.",
    "Numbers like seventeen, forty two and ninety nine are spoken slowly.",
    "Whether the weather be fine or whether the weather be not, we will weather the weather.",
]
EVAL_SENTENCES = [
    "The five boxing wizards jump quickly.",
    "Pack my box with five dozen liquor jugs.",
    "A big black bug bit a big black bear.",
    "Three free throws were thrown through the hoop.",
    "Can you hear the difference between ship and sheep?",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Thursday is the third day after the first of the month.",
    "Zebras and yaks graze quietly near the jagged mountains.",
    # Harvard sentences (IEEE 1969), lists 1-3
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
]
PERTURB = ("noise:20", "noise:10", "speed:0.9", "speed:1.1", "shift:160")
# --smoke: the logmel row alone at k=16, trained on 4 sentences and evaluated on 2: every CLI step and
# both tables in seconds (the suite runs it), no number worth quoting.
SMOKE_TRAIN, SMOKE_EVAL, SMOKE_K = 4, 2, 16


def cli(*args: object) -> str:
    result = subprocess.run([sys.executable, "-m", "audiotok", *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"audiotok {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result.stdout


def make_corpus(folder: Path, sentences: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(sentences):
        wav = folder / f"s{i:02d}.wav"
        if not wav.exists():
            write_aligned(text, wav, wav.with_suffix(".TextGrid"), voice=VOICES[i % len(VOICES)])
    return folder


def random_hubert(folder: Path) -> Path:
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    HubertModel(HubertConfig()).save_pretrained(folder)  # HuBERT-base size: 12 layers, 768 wide, random weights
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(folder)
    return folder


def bundles(work: Path, name: str, model: str, layer: int | None, k: int, train: Path) -> tuple[Path, Path | None]:
    """fp32 and int8 bundles; int8 is None for logmel (export refuses it: nothing there to quantize)."""
    centroids = work / f"{name}.npy"
    layer_args = ["--layer", layer] if layer is not None else []
    if not centroids.exists():
        # 3 k-means++ starts instead of 20 for the 768-wide HuBERT features: minutes on two busy cores
        n_init = ["--n-init", 3] if model != "logmel" else []
        cli("train", "--model", model, *layer_args, "--k", k, *n_init, "-o", centroids, train)
    out = []
    for precision in ("fp32", "int8") if model != "logmel" else ("fp32",):
        bundle = work / f"{name}-{precision}.onnx"
        if not bundle.exists():
            # int8: no floor at export; the agreement is what this benchmark measures and reports
            calibration = ["--calibration", train, "--min-agreement", 0] if precision == "int8" else []
            cli("export", "--model", model, *layer_args, "--centroids", centroids, "--precision", precision,
                *calibration, "-o", bundle)
        out.append(bundle)
    return out[0], (out[1] if len(out) > 1 else None)


def evaluate(work: Path, name: str, fp32: Path, int8: Path | None, corpus: Path) -> dict:
    cached = work / f"{name}.report.json"
    if cached.exists():
        return json.loads(cached.read_text())
    perturb = [a for p in PERTURB for a in ("--perturb", p)]
    quality = json.loads(cli("evaluate", fp32, corpus, "--alignments", corpus, *perturb, "--json"))
    vs_stream = json.loads(cli("evaluate", fp32, corpus, "--stream", "default", "--json"))
    report = {"fp32": quality, "int8": None, "vs_int8": None, "vs_stream": vs_stream["comparison"]}
    if int8 is not None:
        report["int8"] = json.loads(cli("evaluate", int8, corpus, "--alignments", corpus, "--json"))
        report["vs_int8"] = json.loads(cli("evaluate", fp32, corpus, "--against", int8, "--json"))["comparison"]
    cached.write_text(json.dumps(report, indent=1))
    return report


def table(rows: dict[str, dict]) -> str:
    lines = ["| bundle | PNMI | phone purity | cluster purity | bit/s (dedup) | units used | "
             + " | ".join(f"UED {p}" for p in PERTURB) + " |",
             "|---" * (6 + len(PERTURB)) + "|"]
    for name, r in rows.items():
        q, a = r["fp32"], r["fp32"]["alignment"]
        s = q["stats"]
        lines.append(f"| {name} | {a['pnmi']:.3f} | {a['phone_purity']:.3f} | {a['cluster_purity']:.3f} | "
                     f"{s['bitrate']:.0f} ({s['dedup_bitrate']:.0f}) | {s['units_used']}/{s['k']} | "
                     + " | ".join(f"{q['stability'][p]['ued']:.3f}" for p in PERTURB) + " |")
    lines += ["", "| bundle | int8 PNMI | fp32 vs int8: agreement | UED | "
              "offline vs stream 640:80:640: agreement | UED |",
              "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        i, s = r["vs_int8"], r["vs_stream"]
        int8 = (f"{r['int8']['alignment']['pnmi']:.3f} | {i['agreement']:.2%} | {i['ued']:.3f}" if i
                else "n/a | n/a | n/a")  # logmel: nothing to quantize
        lines.append(f"| {name} | {int8} | {s['agreement']:.2%} | {s['ued']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for speech, bundles and reports (reused; required, except with --smoke)")
    parser.add_argument("--no-hubert", action="store_true", help="skip the HuBERT-base-size bundle")
    parser.add_argument("--smoke", action="store_true",
                        help=f"logmel k={SMOKE_K} alone, {SMOKE_TRAIN} training and {SMOKE_EVAL} evaluation sentences: "
                             "checks the script in seconds (the suite)")
    args = parser.parse_args()
    if args.work is None and not args.smoke:
        parser.error("--work is required")
    work = (args.work or Path(tempfile.mkdtemp(prefix="audiotok-unit-quality-"))) / ("smoke" if args.smoke else "")
    train_sentences, eval_sentences = (TRAIN_SENTENCES[:SMOKE_TRAIN], EVAL_SENTENCES[:SMOKE_EVAL]) if args.smoke \
        else (TRAIN_SENTENCES, EVAL_SENTENCES)
    train = make_corpus(work / "train", train_sentences)
    corpus = make_corpus(work / "eval", eval_sentences)
    ks = (SMOKE_K,) if args.smoke else (50, 100, 500)
    configs = [(f"logmel k={k}", f"logmel-{k}", "logmel", None, k) for k in ks]
    if not args.no_hubert and not args.smoke:
        configs.append(("HuBERT-base size, random weights, layer 6, k=100", "hubert-random-l6-100",
                        str(random_hubert(work / "hubert-base-random")), 6, 100))
    rows = {}
    for label, name, model, layer, k in configs:
        fp32, int8 = bundles(work, name, model, layer, k, train)
        rows[label] = evaluate(work, name, fp32, int8, corpus)
        print(f"{label}: done", file=sys.stderr)
    seconds = rows[next(iter(rows))]["fp32"]["seconds"]
    print(f"{len(eval_sentences)} held-out espeak-ng utterances, {seconds:.1f} s; "
          f"bundles trained on {len(train_sentences)} others\n")
    print(table(rows))


if __name__ == "__main__":
    main()
