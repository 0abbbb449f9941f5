"""Scheduler: FIFO admission, continuous batching, chunked prefill, in-flight dedup,
preemption. Driven without a model: a "step" commits the scheduled chunks and appends one
token to every sequence whose tokens are all computed, as sampling would."""

from __future__ import annotations

import pytest
from orchestrator.runtimes.embedded.block_manager import BlockManager
from orchestrator.runtimes.embedded.scheduler import Chunk, Scheduler
from orchestrator.runtimes.embedded.sequence import SeqStatus, Sequence


class Sim:
    def __init__(self, num_blocks: int = 64, max_num_seqs: int = 2, budget: int = 64) -> None:
        self.blocks = BlockManager(num_blocks, block_size=4)
        self.scheduler = Scheduler(
            self.blocks, max_num_seqs=max_num_seqs, max_num_batched_tokens=budget
        )
        self.next_id = 0
        self.left: dict[int, int] = {}

    def add(self, prompt: list[int], new_tokens: int = 3) -> Sequence:
        self.next_id += 1
        seq = Sequence(self.next_id, list(prompt), arrival=self.next_id)
        self.left[seq.seq_id] = new_tokens
        self.scheduler.add(seq)
        return seq

    def step(self) -> list[tuple[int, int, int]]:
        chunks = self.scheduler.schedule()
        for chunk in chunks:
            self.scheduler.commit(chunk)
        for seq in list(self.scheduler.running):
            if seq.num_computed == len(seq.token_ids):
                seq.append([1000 + seq.seq_id])
                self.left[seq.seq_id] -= 1
                if self.left[seq.seq_id] == 0:
                    self.scheduler.free(seq)
        return [(c.seq.seq_id, c.start, c.end) for c in chunks]


PROMPT = list(range(10, 18))  # two blocks of 4


def test_fifo_admission_under_a_stream_of_newer_cache_hits() -> None:
    sim = Sim(max_num_seqs=2)
    first, second = sim.add(PROMPT), sim.add(PROMPT)
    waiter = sim.add(list(range(50, 58)))  # no cache hit: a prefix-first policy would starve it
    newer = []
    for _ in range(8):
        newer.append(sim.add(PROMPT))  # a steady stream of cheaper, newer requests
        sim.step()
    admitted = [s.admitted_step for s in (first, second, waiter, *newer)]
    # A request lives 3 steps (prefill + 2 decodes); the second waits one step for the
    # prefix the first is computing. The waiter takes the first free slot (step 4), and
    # every later request is admitted in arrival order as slots free up.
    assert admitted == [1, 1, 4, 5, 7, 8, None, None, None, None, None]
    assert [s.seq_id for s in sim.scheduler.waiting] == [s.seq_id for s in newer[3:]]


def test_every_active_sequence_is_in_every_step_and_prefill_is_chunked() -> None:
    sim = Sim(max_num_seqs=4, budget=6)
    a = sim.add(list(range(100, 103)), new_tokens=4)
    assert sim.step() == [(a.seq_id, 0, 3)]
    b = sim.add(list(range(200, 210)), new_tokens=2)
    # a decodes in every step while b's 10-token prompt goes in chunks of what is left.
    assert sim.step() == [(a.seq_id, 3, 4), (b.seq_id, 0, 5)]
    assert sim.step() == [(a.seq_id, 4, 5), (b.seq_id, 5, 10)]
    assert sim.step() == [(a.seq_id, 5, 6), (b.seq_id, 10, 11)]
    assert sim.step() == []
    assert sim.blocks.statistics().blocks_in_use == 0


def test_in_flight_prefix_is_computed_once() -> None:
    sim = Sim(max_num_seqs=4)
    a = sim.add([*PROMPT, 1, 2])
    b = sim.add([*PROMPT, 3, 4])
    assert sim.step() == [(a.seq_id, 0, 10)]  # b waits for the blocks a is computing
    assert sim.step() == [(a.seq_id, 10, 11), (b.seq_id, 8, 10)]
    assert (a.num_cached, b.num_cached) == (0, 8)


def test_a_waiter_computes_the_prefix_when_its_producer_goes_away() -> None:
    sim = Sim(max_num_seqs=4)
    a = sim.add([*PROMPT, 1, 2])
    b = sim.add([*PROMPT, 3, 4])
    sim.scheduler.schedule()  # both admitted, a's chunk scheduled but never run
    sim.scheduler.free(a)
    assert sim.step() == [(b.seq_id, 0, 10)]
    assert b.num_cached == 0


def test_the_youngest_request_is_preempted_and_resumes_first() -> None:
    sim = Sim(num_blocks=6, max_num_seqs=2)
    old = sim.add(list(range(100, 108)), new_tokens=8)
    young = sim.add(list(range(200, 207)), new_tokens=6)
    sim.step()
    steps = 1
    while young.status is SeqStatus.RUNNING and steps < 10:
        sim.step()
        steps += 1
    # Both grow to 3 blocks (all 6); in step 6 old computes position 12, which needs a
    # 4th block: young, the youngest, is preempted.
    assert (steps, len(old.token_ids)) == (6, 14)
    assert old.status is SeqStatus.RUNNING and sim.scheduler.waiting[0] is young
    assert young.block_table == [] and young.num_computed == 0
    while old.status is not SeqStatus.FINISHED:
        sim.step()
    while young.status is not SeqStatus.FINISHED:
        sim.step()
    assert len(young.token_ids) == 7 + 6
    assert sim.blocks.statistics().blocks_in_use == 0


@pytest.mark.parametrize("keep", [0, 3])
def test_release_blocks_clears_producer_claims(keep: int) -> None:
    sim = Sim()
    a = sim.add(PROMPT + PROMPT)
    sim.scheduler.schedule()
    sim.scheduler.release_blocks(a, keep=keep // 4)
    assert all(sim.blocks.blocks[b].producer in (None, a.seq_id) for b in a.block_table)
    assert len(a.block_table) == keep // 4
    assert isinstance(Chunk(a, 0, 1), Chunk)
