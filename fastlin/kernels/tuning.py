"""Every tuning constant of the kernels, one line each saying what it controls.

The measurements that chose them are in docs/performance.md. The kernels
read these when Numba compiles them (a changed value takes effect at the
next compile: ``options`` notices that a kernel source changed and drops
Numba's cached machine code).
"""

# ---- Machine -----------------------------------------------------------------
LINE_BYTES = 64                 # cache line; an explicit vector (llvm.Vec) is one line of floats

# ---- CPU: how a layer is swept ---------------------------------------------------
ROW_TILE = 4                    # rows per tile of an upward sweep (register tile: 4 rows x 2 chain columns)
WHOLE_MAX_WEIGHTS = 1 << 13     # a thread's share of a layer below this many weights is swept in one go (it stays in L1/L2), above it tile by tile with prefetch
DOWN_BYTES = 1 << 14            # a downward row block fills this many bytes of rows ...
DOWN_ROWS = 8                   # ... and has at least this many rows (rows >= 4 KiB apart share one L1 set)
COLUMNS_MAX_ROW_BYTES = 2048    # a downward layer with rows this short or shorter is swept in column strips, a longer one in row blocks
STRIP_ROWS = 256                # a column strip is swept in blocks of this many rows (old chain, update, new chain per block)
PAD_ROW_BYTES = 2048            # rows of a column-swept layer a multiple of this long get one unused cache line each (spreads a strip over all cache sets)

# ---- CPU: threads -------------------------------------------------------------------
THREADS_MIN_WEIGHTS = 1 << 12   # a net whose widest swept layer has this many weights is split into one range per thread
RANGE_UNIT = LINE_BYTES // 4    # thread ranges start at multiples of this many rows or columns (a float32 strip), so each row's arithmetic is the same however the net is split
SPINS_BEFORE_YIELD = 1 << 10    # a waiting thread spins this many polls, then yields its core at every further poll
EXPLORE_EVERY = 16              # every this many chunks of one net shape, the slower of one-thread / all-threads is timed again
FAR = 1.5                       # ... four times as rarely when it was more than this many times slower
NEWEST_WEIGHT = 0.5             # weight of the newest timing in a choice's running estimate

# ---- CPU: nonlinear chains (kernels/mlp/sweeps.py) ------------------------------------
ROW_BLOCK = 128                 # rows of W_i per block of the downward visit: a block of one strip (128 x 32 float64 = 32 KiB) is visited by the backward product, then updated while still in L1/L2
UPDATE_SAMPLES = 128            # samples per block of the update W -= lr delta h^T: the block of h^T's strip (32 KiB) stays in L1/L2 while every row tile of W's block passes over it (at batch 128 each block of W is read and written once)
FORWARD_SAMPLES = 128           # samples per block of the upward sweep: a block of h_{i-1} (256 x 128 float64 = 256 KiB) stays in L2 while every row tile of W_i passes over it

# ---- CUDA ---------------------------------------------------------------------------
COOP_MIN_WEIGHTS = 128 * 128    # one net runs on a cooperative grid once its largest layer has this many weights, else on one block (an estimate, not yet measured on a GPU)
THREADS_PER_BLOCK = 128         # threads per block of the step kernel
UP_ROWS = 8                     # rows of V per block tile of an upward layer
DOWN_COLS = 8                   # columns of V per block chunk of a downward layer (8 float64: 64 contiguous bytes)
REDUCTION_BYTES = 16384         # shared memory of the partial-sum reduction; it runs in groups of slots that fit

# ---- Driver -----------------------------------------------------------------------
HOST_THREADS_MIN_BYTES = 1 << 22  # weights of this many bytes or more are normalized and scaled back layer by layer on all of Numba's threads (NumPy releases the GIL; fresh memory is faulted in on every core)
CHUNK_SECONDS = 0.25            # chunks of steps per kernel call double until one takes this long (progress bars move, Python never loops per step)
