#!/usr/bin/env bash
# One short GPU check for issue 17 (scale): llama_124m pretraining MFU on this card — a plain PyTorch loop,
# pretrainer=lean and pretrainer=hf_trainer side by side (benchmarks/bench_pretrainer.py --gpu), then the
# FSDP2 preset on the GPUs there are (one or more). Run from the repository root in a venv that has torch
# with CUDA; lmforge is installed editable first if it is not importable. Prints everything; takes < 6 min.
set -uo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false LMFORGE_CACHE_DIR="${LMFORGE_CACHE_DIR:-/tmp/lmforge-gpu-check}"
python -c "import lmforge" 2>/dev/null || pip install -q --no-deps --no-build-isolation -e . || pip install -q -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"

echo "== 1. MFU: plain PyTorch loop vs lmforge pretrainers (llama_124m, bf16, compile, SDPA, fused AdamW) =="
timeout 330 python benchmarks/bench_pretrainer.py --gpu --steps 50 --batch 32 --block 1024 || echo "bench exited $?"

echo "== 2. FSDP2 preset, pretrainer=lean, all visible GPUs =="
n=$(python -c "import torch; print(torch.cuda.device_count())")
work=$(mktemp -d)
(cd "$work" && timeout 150 accelerate launch --config_file "$OLDPWD/conf/accelerate/fsdp.yml" --num_processes "$n" \
  -m lmforge.cli run hardware=gpu pipeline=pretrain_only pretrainer=lean model=llama_124m tokenizer.vocab_size=4096 \
  pretrainer.max_steps=30 pretrainer.logging_steps=10 pretrainer.batch_size=16 pretrainer.block_size=1024 \
  pretrainer.save_steps=20 pretrainer.eval_steps=0 run.quiet=true run.report=false 'evaluation={}' 2>&1 | tail -5
  python - <<'PY'
import json, pathlib
m = json.loads(pathlib.Path("runs/default/pretrainer/manifest.json").read_text())["metrics"]
print("fsdp2 lean:", {k: m.get(k) for k in ("world_size", "loss", "tokens_per_s", "mfu", "val_loss")})
PY
) || echo "fsdp run exited $?"
rm -rf "$work"
