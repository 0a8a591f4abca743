#!/usr/bin/env python3
"""A model of fwd_sm90's persistent schedule (templates/fwd_sm90.cuh), run under random schedules.

The roles of a CTA: the Q thread (work items from a counter shared by the CTAs, Q into two
buffers), the K / V warp (each item's tiles into the ring, then an end stage whose word is
NO_TILE) and the consumer warpgroups (turns on named barriers, the epilogue, the buffers freed).
mbarriers complete a phase when their arrivals and transaction bytes are in; TMA copies land at
random later steps. Each wait names the completion it expects (as the kernel's parity does); the
model fails on a deadlock, on a wait that a second completion overran (parity would then be
ambiguous), on a copy into a buffer a consumer still reads, on a consumer reading a word other
than the next tile of its item, on two passes of a turn before it is taken, and on turns left
half taken at the end.

    tools/gpu/fwd_sm90_protocol.py [--runs N] [--flow overlap|plain|last] [--consumers 1..3]
                                   [--mutation NAME]

--flow overlap is AJ_ITEM_OVERLAP (items back to back), plain the persistent loop without it,
last the plain loop with AJ_LAST_IN_WORD (an item's last tile says so in its word; only an item
without tiles has an end stage).
A mutation breaks one rule on purpose (the tests check that the model then fails).
"""
import argparse
import random
import sys

NO_TILE = "end"


class ProtocolError(Exception):
    pass


class MBarrier:
    def __init__(self, name, count):
        self.name, self.count, self.pending, self.tx, self.completions = name, count, count, 0, 0

    def _check(self):
        if self.pending == 0 and self.tx == 0:
            self.completions += 1
            self.pending = self.count

    def arrive(self):
        if self.pending <= 0:
            raise ProtocolError(f"{self.name}: more arrivals than its count")
        self.pending -= 1
        self._check()

    def arrive_expect_tx(self, nbytes):
        self.tx += nbytes
        self.arrive()

    def complete_tx(self, nbytes):
        self.tx -= nbytes
        self._check()

    def done(self, k):
        """Completion k (0-based) is in; -1: the fresh barrier's 'previous' phase."""
        if self.completions > k + 1:
            raise ProtocolError(f"{self.name}: completion {k} overrun ({self.completions} completed)")
        return self.completions >= k + 1


class NamedBarrier:
    """bar.sync by the taker (one warpgroup) with bar.arrive by the passer: 256 threads."""

    def __init__(self, name):
        self.name, self.arrived, self.waiting, self.released = name, 0, False, 0

    def arrive(self):
        if self.arrived == 1:
            raise ProtocolError(f"{self.name}: passed twice before it was taken")
        if self.waiting:
            self.waiting, self.released = False, self.released + 1
        else:
            self.arrived = 1

    def sync(self):
        """Returns the release number to wait for, or None when it completes at once."""
        if self.arrived == 1:
            self.arrived = 0
            return None
        self.waiting = True
        return self.released + 1


class Cta:
    def __init__(self, sim, index, nc, stages, qbuffers):
        self.sim, self.index, self.nc, self.st, self.qb_count = sim, index, nc, stages, qbuffers
        m = MBarrier
        self.q_full = [m(f"cta{index}.q_full{i}", 1) for i in range(qbuffers)]
        self.q_empty = [m(f"cta{index}.q_empty{i}", nc) for i in range(qbuffers)]
        self.item_full = [m(f"cta{index}.item_full{i}", 1) for i in range(qbuffers)]
        self.walk_done = m(f"cta{index}.walk_done", 1)
        self.k_full = [m(f"cta{index}.k_full{s}", 1) for s in range(stages)]
        self.v_full = [m(f"cta{index}.v_full{s}", 1) for s in range(stages)]
        self.k_empty = [m(f"cta{index}.k_empty{s}", nc) for s in range(stages)]
        self.v_empty = [m(f"cta{index}.v_empty{s}", nc) for s in range(stages)]
        self.turn = [NamedBarrier(f"cta{index}.turn{c}") for c in range(nc)]
        self.items = [None] * qbuffers  # the item word beside each Q buffer
        self.words = [None] * stages  # the tile word of each stage
        self.q_readers = [set() for _ in range(qbuffers)]  # consumers still reading buffer i
        self.k_readers = [set() for _ in range(stages)]
        self.v_readers = [set() for _ in range(stages)]
        self.k_landing = [0] * stages  # copies in flight into stage s's K
        self.v_landing = [0] * stages
        self.q_landing = [0] * qbuffers

    # ---- the Q thread -------------------------------------------------------------------
    def q_thread(self):
        sim, last_wave, local = self.sim, False, 0
        while True:
            qb = local % self.qb_count
            yield from sim.wait(self.q_empty[qb], local // self.qb_count - 1)
            if last_wave:
                yield from sim.wait(self.walk_done, local - 1)
            item = sim.counter
            sim.counter += 1
            last_wave = item >= len(sim.tiles) - 2 * sim.grid
            self.items[qb] = item if item < len(sim.tiles) else -1
            self.item_full[qb].arrive()
            if item >= len(sim.tiles):
                self.q_full[qb].arrive()
                return
            if self.q_readers[qb]:
                raise ProtocolError(f"cta{self.index}: Q copy into buffer {qb} while {self.q_readers[qb]} read it")
            self.q_full[qb].arrive_expect_tx(1)
            self.q_landing[qb] += 1
            sim.copy(lambda qb=qb: self._land(self.q_landing, self.q_full, qb))
            local += 1
            yield

    def announced(self, bars, local):
        """Item `local` of this CTA, once `bars` (item_full or q_full) announce it: its buffer and
        number (-1: none left)."""
        qb = local % self.qb_count
        yield from self.sim.wait(bars[qb], local // self.qb_count)
        return qb, self.items[qb]

    # ---- the K / V warp -----------------------------------------------------------------
    def kv_warp(self):
        sim, t, local = self.sim, 0, 0
        while True:
            _, item = yield from self.announced(self.item_full, local)
            if item < 0:
                return
            tiles = sim.item_tiles(item)
            for tile in tiles:
                s, r = t % self.st, t // self.st
                yield from sim.wait(self.k_empty[s], r - 1)
                if self.k_readers[s]:
                    raise ProtocolError(f"cta{self.index}: K copy into stage {s} while {self.k_readers[s]} read it")
                self.words[s] = (item, tile)
                self.k_full[s].arrive_expect_tx(1)
                self.k_landing[s] += 1
                sim.copy(lambda s=s: self._land(self.k_landing, self.k_full, s))
                yield from sim.wait(self.v_empty[s], r - 1)
                if self.v_readers[s]:
                    raise ProtocolError(f"cta{self.index}: V copy into stage {s} while {self.v_readers[s]} read it")
                self.v_full[s].arrive_expect_tx(1)
                self.v_landing[s] += 1
                sim.copy(lambda s=s: self._land(self.v_landing, self.v_full, s))
                t += 1
            self.walk_done.arrive()
            if sim.flow != "last" or not tiles:  # ("last": the last tile's word said so)
                yield from self.end_stage(item, t)
                t += 1
            local += 1

    def end_stage(self, item, t):
        """Stage t's word says item `item` ends, once K's and V's previous phases are free."""
        sim = self.sim
        s, r = t % self.st, t // self.st
        yield from sim.wait(self.k_empty[s], r - 1)
        if sim.mutation != "end_v_late":
            yield from sim.wait(self.v_empty[s], r - 1)
        self.words[s] = (item, NO_TILE)
        self.k_full[s].arrive()
        if sim.mutation == "end_v_late":
            yield from sim.wait(self.v_empty[s], r - 1)
        self.v_full[s].arrive()

    def _land(self, landing, full, s):
        landing[s] -= 1
        full[s].complete_tx(1)

    # ---- the consumers ------------------------------------------------------------------
    def consumer(self, c, flow, mutation):
        sim, nc = self.sim, self.nc
        state = {"t": 0}

        def take():
            if nc > 1:
                release = self.turn[c].sync()
                if release is not None:
                    yield from sim.until(lambda: self.turn[c].released >= release, f"cta{self.index}.c{c} turn")

        def pass_turn():
            if nc > 1:
                self.turn[(c + 1) % nc].arrive()

        def next_tile(item, want):
            """Waits for the next stage's K; checks its word; holds K and V there."""
            s, r = state["t"] % self.st, state["t"] // self.st
            yield from sim.wait(self.k_full[s], r)
            if self.words[s] != (item, want):
                raise ProtocolError(f"cta{self.index}.c{c}: stage {s} holds {self.words[s]}, not {(item, want)}")
            self.k_readers[s].add(c)
            return s, r

        def free_k(s):
            self.k_readers[s].discard(c)
            self.k_empty[s].arrive()

        def pv(s, r):
            yield from sim.wait(self.v_full[s], r)
            self.v_readers[s].add(c)

        def free_v(s):
            self.v_readers[s].discard(c)
            self.v_empty[s].arrive()

        def hold_q(qb):
            if self.q_landing[qb]:
                raise ProtocolError(f"cta{self.index}.c{c}: Q buffer {qb} read while its copy lands")
            self.q_readers[qb].add(c)

        def free_q(qb):
            self.q_readers[qb].discard(c)
            self.q_empty[qb].arrive()

        def tile_loop(item, tiles, s, r):
            """The tiles from the first (its S done) through the end stage's word; returns the
            last tile's stage and round, its P V not issued."""
            pv_s = pv_r = None
            for i in range(len(tiles)):
                free_k(s)  # S done, softmax
                if pv_s is not None:
                    free_v(pv_s)
                pv_s, pv_r = s, r
                state["t"] += 1
                if i + 1 == len(tiles):
                    break
                s, r = yield from next_tile(item, tiles[i + 1])
                yield from take()
                yield from pv(pv_s, pv_r)
                pass_turn()
            if flow != "last":
                yield from next_tile(item, NO_TILE)
            return pv_s, pv_r

        if flow in ("plain", "last"):
            local = 0
            while True:
                qb, item = yield from self.announced(self.q_full, local)
                if item < 0:
                    return
                hold_q(qb)
                tiles = sim.item_tiles(item)
                if tiles:
                    s, r = yield from next_tile(item, tiles[0])
                    if c == nc - 1:
                        pass_turn()
                    yield from take()
                    pass_turn()
                    pv_s, pv_r = yield from tile_loop(item, tiles, s, r)
                    yield from take()
                    yield from pv(pv_s, pv_r)
                    if c != nc - 1:
                        pass_turn()
                    free_v(pv_s)
                else:
                    yield from next_tile(item, NO_TILE)
                # epilogue: the end stage (if any) freed after the warpgroup's barrier, then the stores
                end_stage = flow == "plain" or not tiles or mutation == "phantom_end"
                end = state["t"] % self.st
                if end_stage:
                    self.k_readers[end].discard(c)
                yield
                sim.epilogues[item] = sim.epilogues.get(item, 0) + 1
                if end_stage:
                    self.k_empty[end].arrive()
                    self.v_empty[end].arrive()
                    state["t"] += 1
                free_q(qb)
                local += 1

        # flow == "overlap" (AJ_ITEM_OVERLAP): every item has a tile (the producer's masked one)
        local, qb = 0, 0
        _, item = yield from self.announced(self.q_full, 0)
        if item >= 0:
            hold_q(0)
            tiles = sim.item_tiles(item)
            s, r = yield from next_tile(item, tiles[0])
            if c == nc - 1 and mutation != "no_first_pass":
                pass_turn()
            yield from take()
            pass_turn()
        while item >= 0:
            pv_s, pv_r = yield from tile_loop(item, tiles, s, r)
            end = state["t"] % self.st
            self.k_readers[end].discard(c)
            state["t"] += 1
            next_local = local + 1
            next_qb, next_item = yield from self.announced(self.q_full, next_local)
            hold_q(next_qb)
            if next_item >= 0:
                tiles = sim.item_tiles(next_item)
                s, r = yield from next_tile(next_item, tiles[0])
            else:  # the dummy S reads the end stage's K
                if self.k_landing[end]:
                    raise ProtocolError(f"cta{self.index}.c{c}: dummy S reads stage {end} while a copy lands")
                self.k_readers[end].add(c)
            yield from take()
            yield from pv(pv_s, pv_r)
            pass_turn()
            free_v(pv_s)
            if mutation == "early_q_free":
                self.q_empty[qb].arrive()  # (still staging O in it below)
            yield  # epilogue (stage_o), the warpgroup's barrier
            sim.epilogues[item] = sim.epilogues.get(item, 0) + 1
            self.k_empty[end].arrive()
            self.v_empty[end].arrive()
            yield  # store_o
            if mutation == "early_q_free":
                self.q_readers[qb].discard(c)
            else:
                free_q(qb)
            if next_item < 0:
                self.k_readers[end].discard(c)  # the dummy S waited
                self.q_readers[next_qb].discard(c)
            local, qb, item = next_local, next_qb, next_item
        if c == 0 and local > 0 and mutation != "no_last_take":
            yield from take()


class Simulation:
    def __init__(self, rng, flow, nc, stages, grid, items, mutation, qbuffers=2):
        self.rng, self.flow, self.grid, self.mutation = rng, flow, grid, mutation
        self.tiles = items  # tiles per item (0: none admitted)
        self.counter = 0
        self.copies = []
        self.epilogues = {}  # item -> consumers that stored its O
        self.steps = 0
        self.ctas = [Cta(self, i, nc, stages, qbuffers) for i in range(grid)]
        self.agents = []
        for cta in self.ctas:
            self.agents.append([f"cta{cta.index}.q", cta.q_thread(), None])
            self.agents.append([f"cta{cta.index}.kv", cta.kv_warp(), None])
            for c in range(nc):
                self.agents.append([f"cta{cta.index}.c{c}", cta.consumer(c, flow, mutation), None])

    def item_tiles(self, item):
        n = self.tiles[item]
        if n == 0 and self.flow == "overlap":
            return ["masked"]
        return list(range(n))

    def copy(self, land):
        self.copies.append(land)

    def wait(self, bar, k):
        yield ("step", bar.name, k, lambda: True)  # every wait a point where another role may run
        while not bar.done(k):
            yield ("wait", bar.name, k, lambda: bar.done(k))

    def until(self, ready, what):
        while not ready():
            yield ("wait", what, None, ready)

    def run(self, max_steps=200000):
        for _ in range(max_steps):
            runnable = [a for a in self.agents if a[1] is not None and (a[2] is None or a[2]())]
            if not runnable and not self.copies:
                break
            if self.copies and (not runnable or self.rng.random() < 0.3):
                self.copies.pop(self.rng.randrange(len(self.copies)))()
                continue
            agent = self.rng.choice(runnable)
            self.steps += 1
            try:
                blocked = next(agent[1])
                agent[2] = blocked[3] if blocked else None
            except StopIteration:
                agent[1] = None
        stuck = [f"{a[0]}" for a in self.agents if a[1] is not None]
        if stuck:
            raise ProtocolError("deadlock: " + ", ".join(stuck))
        for item in range(len(self.tiles)):
            if self.epilogues.get(item, 0) != len(self.ctas[0].turn):
                raise ProtocolError(f"item {item} stored by {self.epilogues.get(item, 0)} consumers")
        for cta in self.ctas:
            for bar in cta.turn:
                if bar.arrived or bar.waiting:
                    raise ProtocolError(f"{bar.name}: a turn left half taken at the end")


def run_many(runs, flow, consumers, mutation, seed=1):
    """Returns the number of failing runs, the first failure's text and the steps taken."""
    rng = random.Random(seed)
    failures, first, steps = 0, None, 0
    for _ in range(runs):
        nc = consumers or rng.choice([1, 2, 3])
        items = [rng.choice([0, 1, 1, 2, 3, 4]) for _ in range(rng.randint(1, 9))]
        qbuffers = 2 if flow == "overlap" else rng.choice([1, 2])  # (AJ_ITEM_OVERLAP needs two)
        sim = Simulation(rng, flow, nc, rng.choice([2, 3]), rng.choice([1, 2]), items, mutation, qbuffers)
        try:
            sim.run()
        except ProtocolError as e:
            failures += 1
            first = first or f"{e} (consumers {nc}, Q buffers {qbuffers}, items {items})"
        steps += sim.steps
    return failures, first, steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--flow", choices=["overlap", "plain", "last"], default="overlap")
    ap.add_argument("--consumers", type=int, choices=[1, 2, 3])
    ap.add_argument("--mutation",
                    choices=["no_first_pass", "no_last_take", "early_q_free", "end_v_late", "phantom_end"])
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    failures, first, steps = run_many(a.runs, a.flow, a.consumers, a.mutation, a.seed)
    print(f"{a.flow}: {failures} of {a.runs} schedules failed ({steps} steps)" + (f"; first: {first}" if first else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
