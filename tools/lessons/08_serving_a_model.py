# %% [markdown]
# # 08 · Serving a model
#
# Everything comes together. `pl.LLMEngine` serves a GPT-2 model with:
#
# * the **scheduler** of lesson 05 (continuous batching, preemption),
# * the **block manager** of lessons 01-04 (block tables, copy-on-write, prefix caching),
# * a paged **KV cache** written slot by slot (lesson 06),
# * paged **attention** through the block tables: the Triton kernel of lesson 07 on a GPU,
#   batched torch on a CPU (where the interpreter would be too slow to serve).
#
# One engine step: schedule, move blocks (copy, swap), run the model on the batch, sample one
# token per sequence, update the block tables.

# %% [markdown]
# ## A small GPT-2
#
# Real GPT-2 weights need a download. To keep this lesson runnable anywhere, we build a **tiny
# GPT-2 with random weights** using Hugging Face `transformers`, and convert it with
# `pl.GPT.from_hf`. Its tokens are gibberish, but it is the same network as GPT-2, and that is
# all we need to check the engine. With internet access, try the real thing:
#
# ```python
# model = pl.GPT.from_pretrained("gpt2")          # 124M parameters
# from transformers import AutoTokenizer
# tokenizer = AutoTokenizer.from_pretrained("gpt2")
# prompts = [tokenizer.encode("The parking garage")]
# ```

# %%
import random

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

import pagedlab as pl

transformers.logging.set_verbosity_error()
torch.set_num_threads(1)  # a model this small runs fastest on one CPU thread (no waiting on others)
torch.manual_seed(0)
config = GPT2Config(vocab_size=512, n_positions=256, n_embd=64, n_layer=2, n_head=4,
                    bos_token_id=None, eos_token_id=None)
hf_model = GPT2LMHeadModel(config).eval()
model = pl.GPT.from_hf(hf_model)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters, "
      f"{config.n_layer} layers, {config.n_head} heads of {config.n_embd // config.n_head}")

# %% [markdown]
# ## Serve eight prompts at once
#
# Prompts of different lengths (token ids), 32 new tokens each, greedy decoding. The pool has
# only 24 blocks of 8 tokens, less than all eight requests need at their end, so the scheduler
# has to preempt. Look at the stats: steps, preemptions, the peak number of blocks.

# %%
rng = random.Random(0)
prompts = [[rng.randrange(config.vocab_size) for _ in range(rng.randrange(5, 40))]
           for _ in range(8)]
engine = pl.LLMEngine(model, num_blocks=24, block_size=8, max_num_seqs=8)
outputs = engine.generate(prompts, max_new_tokens=32)
stats = engine.stats
print(f"backend for attention: {engine.backend}")
print(f"{len(stats.steps)} steps, {stats.generated_tokens} tokens, {stats.preemptions} preemptions, "
      f"peak {stats.peak_used_blocks} of 24 blocks")
print("request 0 got:", outputs[0][:12], "...")

# %% [markdown]
# ## Same tokens as Hugging Face
#
# Paging, batching and preemption change *where* K/V live and *when* each request runs, never
# *what* the model computes. So greedy decoding must give exactly the tokens Hugging Face's own
# `generate` gives, one prompt at a time, with its contiguous cache.

# %%
reference = []
for prompt in prompts:
    ids = torch.tensor([prompt])
    generated = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32,
                                  do_sample=False, pad_token_id=0)
    reference.append(generated[0, len(prompt):].tolist())
print("same tokens as Hugging Face for every prompt:", outputs == reference)

# %% [markdown]
# ## Watch the pool while it generates
#
# The widget runs the engine with an `on_step` callback that redraws, after every step, the
# pool (each block labelled with the request holding it), a usage bar and the step's numbers;
# at the end it plots usage and batch size over the run. The next cell presses **Generate**
# for you; press it again after changing the sliders. Look for:
#
# * the pool filling up as the prompts are prefilled and the answers grow;
# * preemptions (ticks on the plot) when it is full, and the batch shrinking;
# * with a bigger pool (move the slider to 64): no preemption, the whole batch runs together.

# %%
from pagedlab.widgets import ServingWidget

view = ServingWidget(model, prompts, num_blocks=24, block_size=8, max_new_tokens=32)
view

# %%
_ = view.generate()

# %% [markdown]
# ## The memory-throughput trade, measured
#
# Same prompts, different pool sizes. A larger pool means fewer preemptions and fewer steps,
# so more tokens per step: memory that holds KV is what lets a server batch.

# %%
for num_blocks in [16, 24, 48, 96]:
    engine = pl.LLMEngine(model, num_blocks=num_blocks, block_size=8, max_num_seqs=8)
    engine.generate(prompts, max_new_tokens=32, progress=False)
    steps = len(engine.stats.steps)
    print(f"{num_blocks:>3} blocks: {steps:>3} steps, {engine.stats.preemptions:>2} preemptions, "
          f"{engine.stats.generated_tokens / steps:.1f} tokens per step")

# %% [markdown]
# ## Summary
#
# * The engine is the course in one loop: scheduler, block manager, KV cache, paged attention.
# * Its greedy tokens equal Hugging Face's, token for token: paging is invisible to the model.
# * A bigger pool (or less waste in the same pool) means bigger batches and fewer preemptions.
#
# That is PagedAttention: the KV cache managed like virtual memory, in blocks that can live
# anywhere, so that almost all of it holds tokens, and more requests run at once.
# Well done! Go back to any lesson's widgets, or try the exercises in `exercises/`.
