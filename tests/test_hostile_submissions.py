"""Hostile submissions, graded as one class with the real ones, under each kind of isolation.

Every attack is a course notebook (an unsolved exercise, or its answer cell replaced) with
cells added by a "student" who controls every byte of it. For each isolation mode (namespace,
uid) one class run grades them all next to alice (the seven solutions), bob (the seven
unsolved exercises) and carol (one solution): each attack scores 0, says nothing escaped, and
the others keep exactly their scores, files and results. An attack prints "ESCAPED: ..." if
any step of it works, so a test fails loudly the day the boundary leaks.

The attacks of the review (issue 11) and where they are: switching the in-process guard off
and forging from inside (m01 patches the drivers and the judge, m02 forges result lines from a
thread, m20 walks up to child.py's own frame and emits for it); reading the reference by path,
dir_fd or symlink (m03); running solutions/ (m04); an adapter to anything pagedlab computes
attention with (m05); ex07 by a torch answer and a do-nothing kernel, or a forged JSON encoder
(m06, m07); a table of check()'s public cases (m08); writing the installed package (m09);
/proc of the grader: mem, environ, fd/1 (m10); copying and blanking classmates' notebooks
found through /proc (m11);
a daemon that outlives the run (m12); /dev/shm past the memory limit (m14); a 60,000-line cell
(m16). New here: kill(-1) (m13), a flood of results (m15), symlinks for the root-run cleanup
(m17), an orphan holding the pipes open (m18), another exercise's learner copy (m19: it held
ex05's real BlockManager and was readable in uid mode, until each copy got its own group).
The unwritable results path and the restarts' setup time are in test_grading.py and
test_grade_runner.py.
For ex08 (the chunked-prefill step), an answer that is the grader's own reference (m21) and
one that rebuilds the step on pagedlab's Scheduler (m22): both pass check() in the learner's
kernel, and score 0 where the learner copy leaves the scheduler and the grader out; for ex10
(the capacity arithmetic), an answer through pagedlab.capacity (m23), likewise; for ex09 (the
unified kernel), a torch answer beside a do-nothing kernel (m24), as m06 for ex07.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pagedlab.grading import command, learner_copy, sandbox
from pagedlab.grading.sandbox import FIRST_UID, UID_COUNT

ROOT = Path(__file__).resolve().parent.parent
EXERCISES, SOLUTIONS = ROOT / "exercises", ROOT / "solutions"
PACKAGE = learner_copy.source_folders()[""]
BLOCKS, EX05, SANDBOX_PY = PACKAGE / "blocks.py", PACKAGE / "grading" / "ex05.py", PACKAGE / "grading" / "sandbox.py"
STEM = {path.name[:4]: path.name for path in SOLUTIONS.glob("ex*.ipynb")}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as in CI")


def namespace_problem() -> str | None:
    """Why bubblewrap cannot make namespaces here (None where it can, as in CI)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (make test installs it)"
    done = subprocess.run(["bwrap", "--unshare-pid", "--ro-bind", "/", "/", "true"],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else f"bwrap cannot make namespaces: {done.stderr.strip()}"


def notebook(base: Path, *cells: str, answer: str | None = None) -> dict:
    """Course notebook ``base`` with its answer cell replaced (``answer``) and ``cells`` added
    after it. The answer cell defines MyBlockManager, my_paged_attention, schedule_tokens,
    kv_bytes_per_token or my_unified_kernel."""
    data = json.loads(base.read_text())
    at = next(i for i, c in enumerate(data["cells"]) if c["cell_type"] == "code"
              and ("class MyBlockManager" in "".join(c["source"])
                   or "def my_paged_attention" in "".join(c["source"])
                   or "def schedule_tokens" in "".join(c["source"])
                   or "def kv_bytes_per_token" in "".join(c["source"])
                   or "def my_unified_kernel" in "".join(c["source"])))
    if answer is not None:
        data["cells"][at]["source"] = answer
    data["cells"][at + 1:at + 1] = [{"cell_type": "code", "metadata": {}, "execution_count": None,
                                     "outputs": [], "source": text} for text in cells]
    return data


def ex01(*cells: str) -> dict:
    return notebook(EXERCISES / STEM["ex01"], *cells)


PATCH_DRIVERS = """
import sys
fake = lambda objects, data: [{"result": ["ok", None]}] * (len(data["ops"]) + 1)
for module in list(sys.modules.values()):
    if hasattr(module, "DRIVERS"):
        module.DRIVERS["run_script"] = module.run_script = fake
import pagedlab.grading.judge as judge
judge.verdict = lambda *args, **kwargs: None
"""
FORGE_LINES = """
import json, os, threading
def forge():
    for case in range(6):
        line = json.dumps({"event": "case", "case": case, "status": "ok", "output": []}) + "\\n"
        for fd in range(3, 30):
            try:
                os.write(fd, line.encode())
            except OSError:
                pass
forge()
threading.Thread(target=lambda: [forge() for _ in range(50)], daemon=True).start()
"""
READ_REFERENCE = """
import glob, importlib.util, os, sys
targets = [{blocks!r}]
for folder in sys.path:                 # an editable install says where the real package is
    for finder in glob.glob(os.path.join(folder, "__editable__*finder.py")):
        text = open(finder).read()
        targets += [os.path.join(part.split("'")[0], "blocks.py") for part in text.split(": '")[1:2]]
def by_dir_fd(target):
    folder = os.open(os.path.dirname(target), os.O_RDONLY)
    return os.read(os.open(os.path.basename(target), os.O_RDONLY, dir_fd=folder), 1 << 20).decode()
def by_symlink(target):
    os.symlink(target, "link.py")
    return open("link.py").read()
for target in targets:
    for attempt in (lambda t: open(t).read(), by_dir_fd, by_symlink):
        try:
            source = attempt(target)
        except Exception:
            continue
        print("ESCAPED: read", target)
        namespace = {{"__name__": "pagedlab.stolen", "__package__": "pagedlab"}}
        exec(source, namespace)
        MyBlockManager = namespace["BlockManager"]
"""
BESIDE_THE_VENV = """
import glob, os, sys
# The sandbox must bind Python's folders, even a .venv inside a checkout under /tmp: then the
# checkout is right next to it. Look there, and in whatever the grader keeps in /tmp.
places = [os.path.dirname(sys.prefix), os.path.dirname(os.path.dirname(sys.executable))]
places += glob.glob("/tmp/pagedlab-grade-*")  # (other copies on the machine: see the threat model)
for top in places:
    for name in ("pagedlab/blocks.py", "solutions/ex01_block_manager.ipynb",
                 "*/pagedlab/blocks.py", "work-*/*.ipynb"):
        for path in glob.glob(os.path.join(top, name)):
            try:
                text = open(path).read()
            except OSError:
                continue
            if "class BlockManager" in text or "BEGIN SOLUTION" in text:
                print("ESCAPED: read", path)
"""
RUN_SOLUTION = """
import glob, json
for path in [{solution!r}] + glob.glob({solutions!r} + "/*.ipynb"):
    try:
        cells = json.load(open(path))["cells"]
    except Exception:
        continue
    print("ESCAPED: read", path)
    for cell in cells:
        if "class MyBlockManager" in "".join(cell["source"]):
            exec("".join(cell["source"]), globals())
"""
ADAPTER = """
import importlib, pkgutil, torch, pagedlab
candidates = []
for info in pkgutil.walk_packages(pagedlab.__path__, "pagedlab."):
    try:
        module = importlib.import_module(info.name)
    except BaseException:      # pagedlab.__main__ exits
        continue
    candidates += [getattr(module, n) for n in dir(module) if "attention" in n.lower()]
def my_paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale=None):
    for function in candidates:
        try:
            out = function(q, k_cache, v_cache, block_tables, context_lens, scale=scale)
        except Exception:
            continue
        if isinstance(out, torch.Tensor) and out.shape == q.shape:
            print("ESCAPED: pagedlab's", function)
            return out
    raise RuntimeError("no pagedlab function computed it")
"""
GRADER_REFERENCE = """
import pagedlab as pl
from pagedlab.grading.ex08 import reference_schedule_tokens as schedule_tokens
if schedule_tokens([], [pl.Sequence(1, [1, 2, 3])], 2, 4) == {1: 2}:
    print("ESCAPED: the grader's own answer to ex08")
"""
SCHEDULER_ADAPTER = """
import pagedlab as pl

def schedule_tokens(running, waiting, max_num_batched_tokens, max_num_seqs):
    \"\"\"pagedlab's own Scheduler, rebuilt for this one step (cache hits cut off the prompt).\"\"\"
    bm = pl.BlockManager(4096, 4)
    scheduler = pl.Scheduler(bm, max_num_seqs=max_num_seqs, enable_chunked_prefill=True,
                             max_num_batched_tokens=max_num_batched_tokens)
    print("ESCAPED: pagedlab's Scheduler")
    for seq in running:
        group = scheduler.add(pl.Sequence(seq.seq_id, seq.token_ids))
        scheduler.waiting.remove(group)
        bm.allocate(group.seqs[0], seq.num_computed_tokens)
        group.seqs[0].status = pl.SequenceStatus.RUNNING
        group.started = len(seq.token_ids) > seq.prompt_len
        scheduler.running.append(group)
    for seq in waiting:
        scheduler.add(pl.Sequence(seq.seq_id, seq.token_ids[seq.num_cached_tokens:]))
    return dict(scheduler.schedule().num_scheduled_tokens)
"""
CAPACITY_MODULE = """
import pagedlab.capacity as cap
DTYPE = {1: "fp8", 2: "auto", 4: "float32"}

def kv_bytes_per_token(num_layers, num_heads, num_kv_heads, head_dim, dtype_bytes):
    shape = cap.ModelShape("mine", "llama", num_layers, num_heads, num_kv_heads, head_dim,
                           1, 1, 1, 1, False)
    return cap.kv_bytes_per_token(shape, DTYPE[dtype_bytes])

def num_kv_blocks(memory, utilization, weights, activations, bytes_per_token, block_size):
    left = cap.kv_cache_bytes(memory, utilization, weights, activations)
    return cap.num_kv_blocks(max(left, 0), bytes_per_token, block_size)

max_concurrency = cap.max_concurrency
"""
UNIFIED_TORCH_ANSWER = """
import triton
import triton.language as tl
import pagedlab as pl

@triton.jit
def my_unified_kernel(out_ptr):
    tl.store(out_ptr, 1.0)

def my_unified_attention(q, k_cache, v_cache, block_tables, context_lens, query_lens, scale=None):
    out = pl.paged_prefill_reference(q, k_cache, v_cache, block_tables, context_lens, query_lens, scale)
    my_unified_kernel[(1,)](out)    # launched "with the result"
    return out
"""
TORCH_ANSWER = """
import math, torch
def my_paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale=None):
    S, H, D = q.shape
    N, B, KV, _ = k_cache.shape
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = torch.empty_like(q)
    for i in range(S):
        n = int(context_lens[i])
        blocks = block_tables[i, : -(-n // B)].long()
        k = k_cache[blocks].flatten(0, 1)[:n].repeat_interleave(H // KV, dim=1)
        v = v_cache[blocks].flatten(0, 1)[:n].repeat_interleave(H // KV, dim=1)
        weights = (torch.einsum("hd,nhd->hn", q[i], k) * scale).softmax(-1)
        out[i] = torch.einsum("hn,nhd->hd", weights, v)
    my_paged_decode_kernel[(1,)](out)    # launched "with the result"
    return out
"""
DUMMY_KERNEL = """
import triton
import triton.language as tl
from pagedlab import backend

@triton.jit
def my_paged_decode_kernel(out_ptr):
    tl.store(out_ptr, 1.0)
"""
FORGE_JSON = """
import json
class Forged(json.JSONEncoder):
    def encode(self, value):
        return '{"event": "case", "case": 0, "status": "ok", "output": {"shape": [1], "values": [0]}}'
json.JSONEncoder = Forged
json.dumps = lambda *args, **kwargs: Forged().encode(None)
"""
WRITE_INSTALLED = """
import os, sys, pagedlab
mine = os.path.dirname(pagedlab.__file__)
for path in [{ex05!r}, {sandbox!r}, {blocks!r}, os.path.join(mine, "blocks.py"),
             os.path.join(mine, "grading", "ex05.py"), sys.modules["drivers"].__file__]:
    try:
        with open(path, "a") as file:
            file.write("\\nfrom pagedlab.sequence import *\\n")
        print("ESCAPED: wrote", path)
    except OSError:
        pass
"""
PROC_OF_OTHERS = """
import os
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        if os.stat(f"/proc/{pid}").st_uid == os.getuid():
            continue
    except OSError:
        continue
    for what, attempt in (("mem", lambda: open(f"/proc/{pid}/mem", "r+b")),
                          ("environ", lambda: open(f"/proc/{pid}/environ").read()),
                          ("stdout", lambda: open(f"/proc/{pid}/fd/1", "w").write("FORGED total: 99/99\\n"))):
        try:
            attempt()
            print("ESCAPED:", what, "of", pid)
        except OSError:
            pass
"""
BLANK_OTHERS = """
import glob, json, os
roots = {{{klass!r}}}
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        roots.update(a.decode() for a in open(f"/proc/{{pid}}/cmdline", "rb").read().split(b"\\0")
                     if a.endswith(b".ipynb") or a.startswith(b"/tmp/"))   # not all of /usr
    except OSError:
        pass
for root in roots:
    paths = [root] if root.endswith(".ipynb") else glob.glob(os.path.join(root, "**", "*.ipynb"), recursive=True)
    for path in paths:
        try:                             # copy a classmate's answer...
            cells = json.load(open(path))["cells"]
            print("ESCAPED: read", path)
            for cell in cells:
                if "class MyBlockManager" in "".join(cell["source"]):
                    exec("".join(cell["source"]), globals())
        except (OSError, ValueError):
            pass
        try:                             # ...and leave them nothing
            open(path, "w").close()
            print("ESCAPED: blanked", path)
        except OSError:
            pass
"""
DAEMON = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for _ in range(300):
            for path in [{alice!r}, {csv!r}]:
                try:
                    open(path, "w").write('{{"score": 100}}')
                    print("ESCAPED: the daemon wrote", path, flush=True)
                except OSError:
                    pass
            time.sleep(0.1)
        os._exit(0)
    os._exit(0)
"""
KILL_EVERYONE = """
import os, signal
os.kill(-1, signal.SIGKILL)       # everything this process may signal (not itself)
for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()] + [os.getppid()]:
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            os.kill(pid, signal.SIGKILL)
            print("ESCAPED: killed", pid)
    except OSError:
        pass
"""
LITTER = """
import os
for folder in ("/tmp", "/dev/shm"):
    for n in range(5):
        with open(os.path.join(folder, f"litter-{os.getuid()}-{n}"), "wb") as file:
            file.write(b"x" * 1000)
try:
    with open("/dev/shm/big", "wb") as file:
        for _ in range(100):
            file.write(b"x" * (1 << 20))
    print("ESCAPED: 100 MB in /dev/shm")
except OSError as error:
    print("stopped:", error)
"""
SYMLINKS_FOR_THE_CLEANUP = """
import os
os.symlink({carol!r}, "carol")                     # the grader removes this folder as root
os.makedirs("deep/er")
os.symlink({klass!r}, "deep/er/class")
os.symlink(os.path.join({carol!r}, "ex01_block_manager.ipynb"), "deep/notebook")
"""
ORPHAN_HOLDS_THE_PIPES = """
import os, time
if os.fork() == 0:
    time.sleep(60)          # keeps stdout and stderr open
    os._exit(0)
os._exit(0)
"""
ANOTHER_EXERCISES_COPY = """
import os, sys
mine = os.path.dirname(os.path.dirname(__import__("pagedlab").__file__))    # .../lib-ex01
candidates = [mine.replace("ex01", f"ex0{n}") for n in range(2, 8)]
try:   # the host paths bubblewrap was given, as pid 1 of the namespace shows them
    candidates += [a.decode() for a in open("/proc/1/cmdline", "rb").read().split(b"\\0") if b"lib-ex" in a]
except OSError:
    pass
for folder in candidates:
    try:
        source = open(os.path.join(folder, "pagedlab", "blocks.py")).read()
    except OSError:
        continue
    if "not available" not in source:
        print("ESCAPED: the real blocks.py in", folder)
        for name in [m for m in sys.modules if m.startswith("pagedlab")]:
            del sys.modules[name]
        sys.path.insert(0, folder)
        from pagedlab.blocks import BlockManager as MyBlockManager
"""
CHILDS_OWN_FRAMES = """
import os, sys
frame = sys._getframe()
while frame is not None and "emit" not in frame.f_locals:    # up to child.py's main()
    frame = frame.f_back
emit, job = frame.f_locals["emit"], frame.f_locals["job"]
for case in job["cases"]:
    emit({"event": "start", "case": case["index"]})
    emit({"event": "case", "case": case["index"], "status": "ok",
          "output": [{"result": ["ok", None], "free": 0, "tables": {}}] * (len(case["data"]["ops"]) + 1)})
emit({"event": "done"})
os._exit(0)
"""
FLOOD = """
import os
line = b"x" * (1 << 20)
for fd in range(3, 30):
    try:
        for _ in range(80):
            os.write(fd, line)
    except OSError:
        pass
"""


def lookup_table_answer() -> str:
    """An ex06 answer that replays check()'s public cases: right on all of them, nothing else."""
    from pagedlab.grading import ex06, judge
    cases = ex06.cases(0)
    table = {json.dumps(case.data["q"]): expected["values"]
             for case, expected in zip(cases, judge.expected_outputs(ex06, cases))}
    return (f"import json, torch\nTABLE = json.loads({json.dumps(json.dumps(table))})\n"
            "def my_paged_attention(q, k_cache, v_cache, block_tables, context_lens, scale=None):\n"
            "    key = json.dumps([[[round(x, 4) for x in h] for h in s] for s in q.tolist()])\n"
            "    return torch.tensor(TABLE.get(key, [0.0] * q.numel())).reshape(q.shape)\n")


def attacks(klass: Path, out: Path, csv: Path) -> dict[str, dict]:
    ex06, ex07, ex08 = EXERCISES / STEM["ex06"], EXERCISES / STEM["ex07"], EXERCISES / STEM["ex08"]
    return {
        "m01_patch_drivers": ex01(PATCH_DRIVERS),
        "m02_forge_lines": ex01(FORGE_LINES),
        "m03_read_reference": ex01(READ_REFERENCE.format(blocks=str(BLOCKS))),
        "m04_run_solution": ex01(RUN_SOLUTION.format(solution=str(SOLUTIONS / STEM["ex01"]),
                                                     solutions=str(SOLUTIONS))),
        "m05_adapter": notebook(ex06, answer=ADAPTER),
        "m06_torch_and_dummy_kernel": notebook(ex07, answer=DUMMY_KERNEL + TORCH_ANSWER),
        "m07_forge_json": notebook(ex07, FORGE_JSON, answer=DUMMY_KERNEL + TORCH_ANSWER),
        "m08_lookup_table": notebook(ex06, answer=lookup_table_answer()),
        "m09_write_installed": ex01(WRITE_INSTALLED.format(ex05=str(EX05), sandbox=str(SANDBOX_PY),
                                                           blocks=str(BLOCKS))),
        "m10_proc_of_others": ex01(PROC_OF_OTHERS),
        "m11_blank_others": ex01(BLANK_OTHERS.format(klass=str(klass))),
        "m12_daemon": ex01(DAEMON.format(alice=str(out / "alice.json"), csv=str(csv))),
        "m13_kill_everyone": ex01(KILL_EVERYONE),
        "m14_litter_tmp_and_shm": ex01(LITTER),
        "m15_flood_results": ex01(FLOOD),
        "m16_60000_line_cell": notebook(SOLUTIONS / STEM["ex01"], "\n" * 60_000 + "x = 1"),
        "m17_symlinks_for_the_cleanup": ex01(SYMLINKS_FOR_THE_CLEANUP.format(
            carol=str(klass / "carol"), klass=str(klass))),
        "m18_orphan_holds_the_pipes": ex01(ORPHAN_HOLDS_THE_PIPES),
        "m19_another_exercises_copy": ex01(ANOTHER_EXERCISES_COPY),
        "m20_childs_own_frames": ex01(CHILDS_OWN_FRAMES),
        "m21_ex08_grader_reference": notebook(ex08, answer=GRADER_REFERENCE),
        "m22_ex08_scheduler_adapter": notebook(ex08, answer=SCHEDULER_ADAPTER),
        "m23_ex10_capacity_module": notebook(EXERCISES / STEM["ex10"], answer=CAPACITY_MODULE),
        "m24_ex09_torch_and_dummy_kernel": notebook(EXERCISES / STEM["ex09"], answer=UNIFIED_TORCH_ANSWER),
        "m25_beside_the_venv": ex01(BESIDE_THE_VENV),
    }


def write_class(klass: Path, out: Path, csv: Path) -> None:
    for student, sources in (("alice", sorted(SOLUTIONS.glob("ex*.ipynb"))),
                             ("bob", sorted(EXERCISES.glob("ex*.ipynb"))),
                             ("carol", [SOLUTIONS / STEM["ex01"]])):
        (klass / student).mkdir(parents=True)
        for source in sources:
            shutil.copy(source, klass / student / source.name)
    for student, data in attacks(klass, out, csv).items():
        (klass / student).mkdir()
        exercise = next(k for k, v in STEM.items() if data["metadata"]["pagedlab"]["exercise"] == k)
        (klass / student / STEM[exercise]).write_text(json.dumps(data))


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def sandbox_processes(uids=range(FIRST_UID, FIRST_UID + UID_COUNT)) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields.get("Uid", "0").split()[0]) if status else 0
        if uid in uids and not fields["State"].strip().startswith("Z"):
            found.append(entry.name)
    return found


@pytest.fixture(scope="module")
def python_for_others():
    """uid mode runs Python as an unprivileged uid. Where the interpreter sits under a 0700
    folder (pyenv in /root on these machines), let others pass through (not list) it for the
    tests; Gradescope's image installs Python in /opt and /usr, where this is not needed."""
    changed = []
    # the venv's own path too: a clone in a mktemp -d folder (0700) holds the .venv
    folders = {*Path(os.path.realpath(sys.executable)).parents, *Path(sys.executable).parents,
               *Path(sys.prefix).parents, Path(sys.prefix)}
    for parent in sorted(folders):
        mode = parent.stat().st_mode & 0o7777
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)
            changed.append((parent, mode))
    yield
    for parent, mode in changed:
        os.chmod(parent, mode)


@pytest.fixture(scope="module", params=["namespace", "uid"])
def run(request, tmp_path_factory, python_for_others):
    """One class run: the results per student, what the run printed, the uids it used."""
    if request.param == "namespace" and namespace_problem():
        pytest.skip(namespace_problem())
    used, close = [], sandbox.Sandbox.close

    def recording_close(self):
        used.extend(self.used_uids)
        close(self)
    base = tmp_path_factory.mktemp(request.param)
    klass, out, csv = base / "class", base / "results", base / "grades.csv"
    write_class(klass, out, csv)
    before = digest(klass)
    stdout = base / "stdout.txt"
    saved = os.dup(1)
    with open(stdout, "w") as file:
        os.dup2(file.fileno(), 1)
        sys.stdout = os.fdopen(os.dup(1), "w", buffering=1)
        try:
            sandbox.Sandbox.close = recording_close
            status = command.main([str(klass), "--isolation", request.param, "--jobs", "2",
                                   "--json-dir", str(out), "--csv", str(csv)])
        finally:
            sandbox.Sandbox.close = close
            sys.stdout.flush()
            sys.stdout = sys.__stdout__
            os.dup2(saved, 1)
    left = sandbox_processes(used)
    results = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    time.sleep(1.0)     # long enough for a surviving daemon to act
    return {"mode": request.param, "status": status, "results": results, "left": left,
            "printed": stdout.read_text(), "klass": klass, "before": before, "out": out,
            "csv": csv, "uids": used}


ATTACKS = sorted(attacks(Path("/k"), Path("/o"), Path("/c.csv")))
FULL = 6 * len(STEM)          # alice's score: six cases per exercise


def test_the_run_finishes_and_records_its_isolation(run):
    assert run["status"] == 0, run["printed"][-3000:]
    assert {r["extra_data"]["isolation"] for r in run["results"].values()} == {run["mode"]}
    assert f"(isolation: {run['mode']})" in run["printed"]


def test_solutions_keep_full_marks_and_unsolved_exercises_score_zero(run):
    results = run["results"]
    assert results["alice"]["score"] == FULL, results["alice"]["output"][:3000]
    assert results["bob"]["score"] == 0 and len(results["bob"]["tests"]) == FULL
    assert results["carol"]["score"] == 6


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_scores_zero_and_nothing_escapes(run, attack):
    result = run["results"][attack]
    assert result["score"] == 0, result["output"][:3000]
    assert "ESCAPED" not in result["output"], result["output"][:3000]


def test_no_notebook_of_the_class_and_no_file_of_pagedlab_changed(run):
    assert digest(run["klass"]) == run["before"]
    for path in (EX05, SANDBOX_PY, BLOCKS):   # what m09 appends to, were it writable
        assert not path.read_text().endswith("from pagedlab.sequence import *\n"), path


def test_results_are_untouched_after_the_run_and_no_sandbox_process_outlives_it(run):
    assert run["uids"] and run["left"] == [] and sandbox_processes(run["uids"]) == []
    alice = json.loads((run["out"] / "alice.json").read_text())
    assert alice["score"] == FULL
    assert ",".join(["alice"] + ["6"] * len(STEM) + [str(FULL)] * 2) in run["csv"].read_text()


def test_nothing_forged_reaches_the_graders_own_output(run):
    assert "FORGED" not in run["printed"]


def test_litter_in_tmp_and_dev_shm_is_gone_and_dev_shm_is_capped(run):
    for folder in ("/tmp", "/dev/shm"):
        assert not [p for p in os.listdir(folder) if p.startswith("litter-")], folder
    output = run["results"]["m14_litter_tmp_and_shm"]["output"]
    assert "stopped:" in output and "PermissionError" not in output, output[-2000:]


def test_a_60000_line_cell_is_refused_with_a_clear_zero(run):
    output = run["results"]["m16_60000_line_cell"]["output"]
    assert "60,001 lines, over the grader's limit" in output


def test_an_orphan_holding_the_pipes_does_not_keep_the_grader_waiting(run):
    result = run["results"]["m18_orphan_holds_the_pipes"]
    assert all("exited with status 0" in t["output"] for t in result["tests"]), result["output"]
    assert result["execution_time"] < 100      # not the 120 s setup budget


def test_an_ex07_torch_answer_with_a_dummy_kernel_computes_nothing(run):
    tests = run["results"]["m06_torch_and_dummy_kernel"]["tests"]
    assert all("my_paged_decode_kernel" in t["output"] or "raised" in t["output"] for t in tests)


def test_an_ex08_answer_through_pagedlabs_scheduler_finds_it_left_out(run):
    for attack in ("m21_ex08_grader_reference", "m22_ex08_scheduler_adapter"):
        tests = run["results"][attack]["tests"]
        assert len(tests) == 6 and all("not available while ex08 is graded" in t["output"]
                                       for t in tests), (attack, tests[0]["output"])


def test_an_ex10_answer_through_pagedlab_capacity_finds_it_left_out(run):
    tests = run["results"]["m23_ex10_capacity_module"]["tests"]
    assert len(tests) == 6 and all("not available while ex10 is graded" in t["output"]
                                   for t in tests), tests[0]["output"]


def test_an_ex09_torch_answer_with_a_dummy_kernel_computes_nothing(run):
    tests = run["results"]["m24_ex09_torch_and_dummy_kernel"]["tests"]
    assert len(tests) == 6 and all("my_unified_kernel" in t["output"] or "raised" in t["output"]
                                   for t in tests), tests[0]["output"]


def test_the_attacks_do_work_where_there_is_no_boundary():
    """Controls: in the learner's own kernel (check polices nothing) the adapter and the
    lookup table pass, so their zeros above come from the boundary and the fresh cases."""
    import pagedlab as pl
    for answer in (ADAPTER, lookup_table_answer()):
        namespace: dict = {}
        exec(answer, namespace)
        assert pl.check("ex06", paged_attention=namespace["my_paged_attention"]).score == 6
    for answer in (GRADER_REFERENCE, SCHEDULER_ADAPTER):
        namespace = {}
        exec(answer, namespace)
        assert pl.check("ex08", schedule_tokens=namespace["schedule_tokens"]).score == 6
    namespace = {}
    exec(CAPACITY_MODULE, namespace)
    assert pl.check("ex10", **{name: namespace[name] for name in (
        "kv_bytes_per_token", "num_kv_blocks", "max_concurrency")}).score == 6
