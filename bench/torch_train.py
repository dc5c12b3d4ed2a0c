"""PyTorch reference for `coffre bench train`: the same Llama configuration, batch, mode and
optimizer, trained with Hugging Face transformers (+ PEFT for LoRA) on the CPU.

Prints one JSON object: tokens per second and per CPU-second of the median timed step.
Run by bench/train-vs-pytorch, which installs torch, transformers and peft into a virtualenv.
"""

import argparse
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

CONFIGS = {
    # SmolLM2-135M (the demo model): 30 layers, hidden 576, 9 heads / 3 KV heads, vocab 49152.
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, rms_norm_eps=1e-5, rope_theta=100000.0,
                         max_position_embeddings=2048, tie_word_embeddings=True),
    # A small Llama for quick runs.
    "small": dict(vocab_size=8192, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=4, rms_norm_eps=1e-5, rope_theta=10000.0,
                  max_position_embeddings=2048, tie_word_embeddings=False),
}


def matmul(shapes_file, threads, seconds):
    """torch.mm / torch.bmm on the shapes `coffre bench matmul --json` printed, same layouts."""
    torch.set_num_threads(threads)
    for line in open(shapes_file):
        p = json.loads(line)
        b, m, k, n = p["batch"], p["m"], p["k"], p["n"]
        rand = lambda *s: torch.rand(*s) - 0.5
        if p["pass"] in ("x·Wᵀ", "q·kᵀ"):
            x, y = rand(b, m, k), rand(b, n, k).transpose(1, 2)
        elif p["pass"] == "gᵀ·x":
            x, y = rand(b, k, m).transpose(1, 2), rand(b, k, n)
        else:
            x, y = rand(b, m, k), rand(b, k, n)
        if b == 1:
            x, y = x[0], y[0]
        op = torch.mm if b == 1 else torch.bmm
        out = op(x, y)  # the result buffer, reused: no fresh pages per call
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or runs < 3:
            op(x, y, out=out)
            runs += 1
        gflops = 2 * b * m * k * n * runs / (time.perf_counter() - start) / 1e9
        print(json.dumps({**p, "threads": threads, "gflops": gflops, "impl": "torch " + torch.__version__}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="smollm2-135m", choices=sorted(CONFIGS))
    ap.add_argument("--mode", default="lora", choices=["lora", "full"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--matmul", metavar="SHAPES_JSONL",
                    help="time torch.mm on the shapes `coffre bench matmul --json` printed, then exit")
    ap.add_argument("--seconds", type=float, default=0.3)
    a = ap.parse_args()
    if a.matmul:
        return matmul(a.matmul, a.threads, a.seconds)

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    config = LlamaConfig(**CONFIGS[a.config], hidden_act="silu", attention_bias=False, mlp_bias=False)
    model = LlamaForCausalLM(config).float()
    if a.mode == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (a.batch, a.seq + 1), generator=gen)
    inputs, labels = ids[:, :-1], ids[:, 1:]

    def step():
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    step()  # warm-up: allocations, kernel selection
    # Per step, medians over the steps: the same statistic as `coffre bench train`.
    walls, cpus = [], []
    for _ in range(a.steps):
        wall, cpu = time.perf_counter(), time.process_time()
        loss = step()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    tokens = a.batch * a.seq
    print(json.dumps({"impl": "pytorch " + torch.__version__, "config": a.config, "mode": a.mode,
                      "threads": a.threads, "batch": a.batch, "seq": a.seq, "steps": a.steps,
                      "trainable": sum(p.numel() for p in params), "loss": loss,
                      "tokens_per_second": tokens / wall, "tokens_per_cpu_second": tokens / cpu}))


if __name__ == "__main__":
    main()
