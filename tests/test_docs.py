"""README is a front door and docs/ the manual: nothing a user could do before the move is lost.

README once held the whole manual. When it moved to docs/, every `audiotok ...` command line and every
`--flag` it showed was frozen below; each must still appear in README.md or a page of docs/ (after
joining continued lines and collapsing whitespace). A page may reword its prose, not drop a command.
"""

from __future__ import annotations

import re

from conftest import REPO

README_MAX_LINES = 220

# Every command line README showed before the manual moved to docs/ (from its code blocks and inline code).
COMMANDS = [
    'audiotok train --model logmel --k 100 -o units.npy examples/speech/',
    'audiotok export --model logmel --centroids units.npy -o units.onnx',
    'audiotok tokenize units.onnx examples/speech/*.ogg',
    'audiotok train --model facebook/hubert-base-ls960 --layer 6 --k 100 -o hubert6-100.npy librispeech/',
    'audiotok export --model facebook/hubert-base-ls960 --centroids hubert6-100.npy -o hubert6-100.onnx',
    'audiotok train --model utter-project/mhubert-147 --layer 9 --k 1000 -o mhubert9-1000.npy speech/',
    'audiotok export --model utter-project/mhubert-147 --centroids mhubert9-1000.npy -o mhubert9-1000.onnx',
    'audiotok tokenize hubert6-100.onnx talk.mp3 --format jsonl --dedup',
    'audiotok stream hubert6-100.onnx',
    'audiotok export --model hubert-base/ --centroids km500.npy --precision fp32 -o km500.onnx',
    'audiotok export --model hubert-base/ --centroids km500.npy --precision int8 --calibration speech/ -o km500-int8.onnx',
    'audiotok export --model hubert-base/ --centroids km500.npy --precision fp16 -o km500-fp16.onnx',
    'audiotok verify km500-int8.onnx --model hubert-base/ my-speech/',
    'audiotok stream units.onnx',
    'audiotok stream units.onnx --device 2 --seconds 30 --format jsonl',
    'audiotok stream units.onnx --input speech.wav',
    'audiotok stream units.onnx --input -',
    'audiotok stream units.onnx --input - --rate 48000 --channels 2',
    'audiotok stream units.onnx --input - --f32le',
    'audiotok bench units.onnx',
    'audiotok tokenize units.onnx librispeech/ --format jsonl -o units.jsonl --jobs 2',
    'audiotok tokenize units.onnx @train.tsv @dev.tsv --format jsonl --dedup -o units.jsonl --jobs 8',
    'audiotok tokenize units.onnx corpus/ --format jsonl -o units.jsonl --engine ray',
    'audiotok tokenize units.onnx @train.tsv --format jsonl -o units.jsonl --engine ray --ray-address auto',
    'audiotok export --model utter-project/mHuBERT-147 --layer 12 --centroids out.mHuBERT-147.k500.centroids.npy --pad-last-frame --channel 0 -o mhubert-500.onnx',
    'audiotok evaluate units.onnx speech/',
    'audiotok evaluate units.onnx speech/ --alignments mfa/ --confusion confusion.png',
    'audiotok evaluate units.onnx speech/ --against units-int8.onnx',
    'audiotok evaluate units.onnx speech/ --stream 640:80:640',
    'audiotok evaluate units.onnx speech/ --perturb noise:20 --perturb speed:1.1 --perturb shift:160 --json -o report.json',
    'audiotok evaluate mhubert-500.onnx stereo/ --channel 0 --trim-silence 30',
    'audiotok evaluate hubert6-500.onnx LibriSpeech/dev-clean --alignments mfa-dev-clean/ --perturb noise:20 --perturb noise:10 --perturb speed:0.9 --perturb speed:1.1 --perturb shift:160 --confusion dev-clean-confusion.png -o dev-clean.json',
    'audiotok tokenize/stream/info/bench',
    'audiotok train/export/verify',
    'audiotok plot',
    'audiotok evaluate',
    'audiotok train --model M [--layer L] --k K -o C.npy DATA...',
    'audiotok export --model M --centroids C -o B.onnx [--precision fp32\\|int8\\|fp16]',
    'audiotok tokenize B.onnx PATH...',
    'audiotok stream B.onnx [--input mic\\|-\\|FILE]',
    'audiotok verify B.onnx --model M AUDIO...',
    'audiotok info B.onnx [--centroids OUT.npy]',
    'audiotok bench B.onnx [--threads N...] [--stream C:L:X...] [--latency-ms MS...] [--json]',
    'audiotok plot B.onnx AUDIO -o out.png',
    'audiotok evaluate B.onnx AUDIO... [--alignments PATH] [--against B2.onnx \\| --stream C:L:X] [--perturb SPEC]...',
    'audiotok export',
    'audiotok train',
    'audiotok verify',
    'audiotok tokenize',
    'audiotok bench',
    'audiotok stream --input - --format jsonl',
    'audiotok info units.onnx',
    'audiotok info',
    'audiotok stream B --input - --rate 22050',
    'audiotok bench --threads 1 2 --json',
    'audiotok export --centroids',
    'audiotok export --model facebook/hubert-base-ls960 --layer 6 --centroids centroids.npy -o hubert.onnx',
    'audiotok export --model facebook/hubert-base-ls960 --layer 6 --centroids kmeans.pt -o hubert.onnx',
    'audiotok export --model facebook/hubert-base-ls960 --layer 6 --centroids km.bin -o hubert100.onnx',
    'audiotok export --model ./my-hubert --layer 9 --centroids kmeans.index -o units.onnx',
    'audiotok info B.onnx --centroids out.npy',
    'audiotok tokenize units.onnx a.wav b.wav -o units.txt',
    'audiotok tokenize units.onnx corpus/ --format jsonl --dedup -o units.jsonl',
    'audiotok tokenize units.onnx corpus/ --format fairseq -o train.km',
    'audiotok tokenize units.onnx corpus/ --format npy -o units/',
    'audiotok plot units.onnx speech.wav -o speech.png',
    'audiotok train --kmeans faiss --channel 0 --trim-silence 30 --pad-last-frame',
    'audiotok stream BUNDLE --input -',
]
FLAGS = [
    '--address', '--against', '--alignments', '--audio', '--cache', '--calibration', '--centroids', '--channel',
    '--channels', '--checkpoint', '--chunk-ms', '--confusion', '--context-ms', '--dedup', '--device', '--dist',
    '--engine', '--f32le', '--faiss-niter', '--feature-norm', '--files', '--fit-memory-gb', '--format', '--head',
    '--height', '--help', '--hours', '--input', '--jobs', '--json', '--k', '--kmeans', '--latency-ms', '--layer',
    '--layers', '--layout', '--local-dir', '--lookahead-ms', '--max-frames-file', '--max-frames-total', '--max-hours',
    '--max-pass-seconds', '--min-agreement', '--model', '--no-deps', '--no-what-if', '--noise-dir', '--overwrite',
    '--pad-last-frame', '--percent', '--perturb', '--port', '--precision', '--provider', '--rate', '--ray-address',
    '--repeat', '--rounds', '--sample-seconds', '--seconds', '--seed', '--setting', '--smoke', '--start', '--stream',
    '--target', '--threads', '--tier', '--trim-silence', '--width', '--work', '--workdir', '--write-faiss-index',
]


def manual_text() -> str:
    """README and every page of docs/, continued lines joined and whitespace collapsed."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    text = "\n".join(page.read_text() for page in pages)
    return " ".join(re.sub(r"\\\n", " ", text).split())


def test_every_command_readme_showed_is_still_documented():
    text = manual_text()
    missing = [command for command in COMMANDS if command not in text]
    assert not missing, f"commands no longer in README.md or docs/: {missing}"


def test_every_flag_readme_showed_is_still_documented():
    text = manual_text()
    missing = [flag for flag in FLAGS if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)]
    assert not missing, f"flags no longer in README.md or docs/: {missing}"


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the manual belongs in docs/"


def test_readme_test_command_is_the_one_ci_runs():
    """README's test command is, character for character, the last line of .ci/run."""
    ci_line = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert any(line == ci_line for block in blocks for line in block.splitlines()), ci_line
