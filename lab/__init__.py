"""The research side of the demo recipe: its training chain, evaluation, studies, probes and benchmarks, and the
run records they read. Run its parts as modules from the repository root (``python -m lab.eval``,
``python -m lab.train_demo``, ``python -m lab.bench.bench_tokenizer``); none of it ships with the pack."""

from pathlib import Path

# The demo recipe's run records: each finished phase's config, metrics and the outputs a later phase reads
# (train_demo.py --save / --restore), the VAE gate's verdict and packaged.json (which phase the demo set holds).
DEMO_RECORDS = Path(__file__).resolve().parent / "runs" / "demo128"
