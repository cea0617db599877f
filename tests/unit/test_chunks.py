"""Chunk continuation and context-window sizing (pure logic): chained chunks land on the one-node sampler's
windows, and bad offsets, lengths and overlaps are refused or adjusted with a note."""

import pytest

from im_animation_core.chunks import plan_chunk
from im_animation_core.errors import InputError
from im_animation_core.windows import Window, context_window_sizes, plan_windows, reference_anchored


def test_chained_chunks_are_the_one_node_samplers_windows():
    first = plan_chunk(49, 0, 17)
    second = plan_chunk(49, first.next_offset, 16, previous_end=first.window.stop - 1, continued=True)
    third = plan_chunk(49, second.next_offset, 0, previous_end=second.window.stop - 1, continued=True)
    assert [c.window for c in (first, second, third)] == plan_windows(13, 5, 1)
    assert (first.next_offset, second.next_offset, third.next_offset) == (17, 33, 49)


def test_an_offset_that_does_not_continue_the_previous_chunk_is_moved_with_a_note():
    chunk = plan_chunk(49, 20, 16, previous_end=4, continued=True)
    assert chunk.offset == 17 and chunk.window == Window(4, 9, 1, 0)
    assert any("video_frame_offset 20" in n for n in chunk.notes)
    unaligned = plan_chunk(49, 19, 16, continued=True)  # no record of where the previous chunk ended
    assert unaligned.offset == 17 and any("whole latent frame" in n for n in unaligned.notes)


def test_a_fresh_chunk_mid_clip_starts_on_a_latent_frame():
    chunk = plan_chunk(49, 6, 8)
    assert chunk.window == Window(1, 5, 0, 0) and chunk.next_offset == 17


@pytest.mark.parametrize("offset, kw, words", [
    (49, {}, "past the end"),
    (60, {"continued": True}, "past the end"),
    (0, {"continued": True}, "video_frame_offset is 0"),
    (49, {"continued": True, "previous_end": 12}, "nothing is left"),
])
def test_offsets_past_the_end_are_refused(offset, kw, words):
    with pytest.raises(InputError, match=words):
        plan_chunk(49, offset, 0, **kw)


def test_a_length_past_the_end_is_cut_with_a_note():
    chunk = plan_chunk(49, 33, 100, previous_end=8, continued=True)
    assert chunk.window.stop == 13 and chunk.next_offset == 49
    assert any("runs past" in n for n in chunk.notes)


def test_windows_start_from_the_identity():
    assert reference_anchored([[0, 1, 2], [2, 3, 4]]) == [[0, 1, 2, 3], [0, 3, 4, 5]]


def test_context_window_sizes():
    assert context_window_sizes(5, 1, 5) == (5, 1, [])
    length, overlap, notes = context_window_sizes(21, 7, 5)
    assert (length, overlap) == (5, 1) and len(notes) == 2 and "context_length" in notes[0]
    with pytest.raises(InputError, match="context_overlap"):
        context_window_sizes(5, 5, 5)
    assert context_window_sizes(5, 9, 5, uses_overlap=False)[:2] == (5, 9)  # batched: overlap unused
