from shared.backup.plan import Span, plan_data_chunks, plan_dirty_chunks

MiB = 1 << 20


def test_data_chunks_carry_only_their_data_ranges() -> None:
    plans = plan_data_chunks([Span(0, 100), Span(3 * MiB, 2 * MiB)], 4 * MiB, 10 * MiB)
    assert [p.index for p in plans] == [0, 1]
    assert plans[0].reads == (Span(0, 100), Span(3 * MiB, MiB))
    assert plans[1].reads == (Span(4 * MiB, MiB),)
    assert plans[0].bytes_to_read == 100 + MiB


def test_last_chunk_is_short() -> None:
    plans = plan_data_chunks([Span(9 * MiB, MiB)], 4 * MiB, 10 * MiB)
    assert (plans[0].index, plans[0].start, plans[0].length) == (2, 8 * MiB, 2 * MiB)


def test_dirty_chunks_are_read_whole() -> None:
    plans = plan_dirty_chunks([Span(5 * MiB, 10), Span(5 * MiB + 100, 10)], 4 * MiB, 10 * MiB)
    assert len(plans) == 1
    assert plans[0].reads == (Span(4 * MiB, 4 * MiB),)


def test_nothing_to_read() -> None:
    assert plan_data_chunks([], 4 * MiB, 10 * MiB) == []
