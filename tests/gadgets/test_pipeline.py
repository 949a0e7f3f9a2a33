"""The slice pipelines: side by side (OrderedPipeline) and batched (BatchingPipeline)."""

from __future__ import annotations

import threading

import pytest

from gadgets.pipeline import BatchingPipeline, OrderedPipeline

TIMEOUT_S = 30.0


def _drain(pipeline: OrderedPipeline | BatchingPipeline) -> list[tuple[object, object, object]]:
    outcomes = []
    while len(pipeline):
        pipeline.wait_for_head()
        outcomes += [(outcome.key, outcome.value, outcome.error) for outcome in pipeline.finished()]
    return outcomes


def test_items_waiting_together_run_as_one_batch_and_come_back_in_order() -> None:
    release = threading.Event()
    batches: list[list[int]] = []
    done: list[int] = []

    def run_batch(items: list[int]) -> list[object]:
        batches.append(items)
        if len(batches) == 1:
            assert release.wait(TIMEOUT_S)  # the first item runs while the others arrive
        return [ValueError(f"bad {item}") if item == 3 else 10 * item for item in items]

    pipeline: BatchingPipeline[str, int, int] = BatchingPipeline(3, run_batch, on_done=lambda: done.append(1))
    for item in range(6):
        pipeline.submit(f"slice {item}", item)
    release.set()
    outcomes = _drain(pipeline)
    pipeline.close()
    assert batches == [[0], [1, 2, 3], [4, 5]]  # at most max_batch, in arrival order
    assert pipeline.batch_sizes == [1, 3, 2]
    assert [key for key, _, _ in outcomes] == [f"slice {item}" for item in range(6)]
    assert [value for _, value, _ in outcomes] == [0, 10, 20, None, 40, 50]
    errors = [error for _, _, error in outcomes]
    assert isinstance(errors[3], ValueError) and str(errors[3]) == "bad 3"
    assert sum(error is not None for error in errors) == 1
    assert len(done) == 6


@pytest.mark.parametrize("failure", ["raises", "wrong length"])
def test_a_failed_batch_is_every_item_s_error(failure: str) -> None:
    def run_batch(items: list[int]) -> list[object]:
        if failure == "raises":
            raise RuntimeError("device lost")
        return items[:-1]

    pipeline: BatchingPipeline[int, int, int] = BatchingPipeline(4, run_batch)
    pipeline.submit(0, 0)
    outcomes = _drain(pipeline)
    pipeline.close()
    assert len(outcomes) == 1 and outcomes[0][1] is None
    error = outcomes[0][2]
    assert isinstance(error, RuntimeError)
    assert ("device lost" if failure == "raises" else "returned 0 results") in str(error)


def test_ordered_pipeline_keeps_submission_order() -> None:
    release = threading.Event()

    def slow() -> str:
        assert release.wait(TIMEOUT_S)
        return "first"

    pipeline: OrderedPipeline[int, str] = OrderedPipeline(2)
    pipeline.submit(0, slow)
    pipeline.submit(1, lambda: "second")
    assert list(pipeline.finished()) == []  # the second is held back behind the first
    release.set()
    assert [value for _, value, _ in _drain(pipeline)] == ["first", "second"]
    pipeline.close()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchingPipeline(0, lambda items: items)
    with pytest.raises(ValueError, match="workers"):
        OrderedPipeline(0)
