# %% [markdown]
# # 01 · The parking garage
#
# A language model writes one token at a time. To write the next token it looks back at every
# earlier token through their **keys and values** (the *KV cache*). That cache grows by one
# token per step and lives in GPU memory until the request ends. Serving many requests at once
# means keeping many growing caches in one fixed pool of memory.
#
# Picture a **parking garage**:
#
# | garage | KV cache |
# | --- | --- |
# | the garage | the KV-cache pool in GPU memory |
# | a parking space | a **block**: room for the K/V of `block_size` tokens |
# | a car | a **sequence** (one request), growing by one token per step |
# | the attendant | the **block manager** (`pl.BlockManager`) |
# | the ticket each car keeps | the **block table**: logical block *i* &rarr; space number |

# %% [markdown]
# ## A car arrives
#
# The attendant gives a new car enough spaces for its prompt, **anywhere** in the garage.
# Look at the block table: a 5-token prompt with 4 slots per space takes 2 spaces.

# %%
import pagedlab as pl

garage = pl.BlockManager(num_blocks=8, block_size=4)
car = pl.Sequence(seq_id=1, token_ids=[101, 7, 42, 9, 15])
garage.allocate(car)
print("ticket (block table):", car.block_table)
print("free spaces:", garage.num_free_blocks, "of", garage.num_blocks)

# %% [markdown]
# ## The car grows
#
# Each generated token goes into the next slot of the car's last space. Watch the ticket: it
# gets a new space only when the last one is full (after tokens 6, 7 and 8 the space is full;
# token 9 needs a new one).

# %%
for token in [3, 8, 11, 60]:
    garage.append_token(car, token)
    print(f"{len(car)} tokens -> ticket {car.block_table}, free spaces {garage.num_free_blocks}")

# %% [markdown]
# ## All or nothing
#
# A request that does not fit is turned away **without taking anything**: a half-parked car
# would hold spaces it cannot use. Look at the error message (it says what to do) and at the
# free count, which did not change.

# %%
bus = pl.Sequence(seq_id=2, token_ids=list(range(30)))
try:
    garage.allocate(bus)
except pl.OutOfBlocks as error:
    print("OutOfBlocks:", error)
print("free spaces still:", garage.num_free_blocks, "| the bus's ticket:", bus.block_table)

# %% [markdown]
# ## The car leaves
#
# When a request finishes, all its spaces go back to the pool at once, ready for anyone.

# %%
garage.free(car)
print("free spaces:", garage.num_free_blocks, "of", garage.num_blocks)

# %% [markdown]
# ## Play with the garage
#
# Press **New car** a few times, then **Next token**, then let a car leave and park a new one.
# Look for:
#
# * each car has a colour *and* a name (A1, B2, ...); the ticket on the right lists its spaces;
# * the squares inside a space are its token slots (&#9632; holds a token, &#9633; is empty):
#   only a car's **last** space can have empty slots;
# * after a car leaves, the next car takes the freed spaces, even if they are scattered;
# * a car that does not fit is turned away, and nothing changes (all or nothing).

# %%
from pagedlab.widgets import GarageWidget

GarageWidget(num_blocks=12, block_size=4, prompt_len=5)

# %% [markdown]
# ## Contiguous vs paged parking
#
# Before paging, serving systems gave each request **one contiguous region** sized for the
# longest answer it might produce (here 16 slots), because nobody knows in advance when a car
# stops growing. Most of that region stays empty. Paging gives a car only the spaces its
# tokens fill. Same 5 cars (lengths in tokens), same 48-slot garage:

# %%
from IPython.display import HTML

from pagedlab.widgets import parking_comparison

HTML(parking_comparison(lengths=[5, 9, 3, 7, 6], max_len=16, num_slots=48))

# %% [markdown]
# ## Your turn
#
# In `exercises/ex01_block_manager.ipynb` you write the attendant yourself: `allocate`,
# `append_token` and `free`, all or nothing. Its last cell, `pl.check("ex01", ...)`, tells you
# which cases pass.
#
# ## Summary
#
# * The KV cache is a pool of fixed-size **blocks**; a sequence's **block table** maps its
#   logical blocks to physical ones, which can be anywhere.
# * A sequence takes a new block only when its last one is full, so at most one block per
#   sequence is partly empty.
# * Allocation is all or nothing, and a finished sequence returns all its blocks at once.
#
# Next: [02 · Pages and block tables](02_pages_and_block_tables.ipynb).
