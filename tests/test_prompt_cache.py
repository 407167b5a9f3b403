"""PromptCache: which slot a request takes and how much of its prompt it may keep."""

from __future__ import annotations

from backends.prompt_cache import PromptCache, common_prefix_length


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2


def hold(cache: PromptCache, prompt: list[int], key: str | None = None):
    placement = cache.place(prompt, key)
    assert placement is not None
    placement.slot.tokens = list(prompt)  # what the engine leaves after computing the prompt
    cache.release(placement.slot)
    return placement


def test_request_goes_to_the_slot_with_the_longest_prefix_and_keeps_it() -> None:
    cache = PromptCache(3)
    first = hold(cache, [1, 2, 3, 4, 5])
    hold(cache, [9, 9, 9])
    again = cache.place([1, 2, 3, 4, 6, 7], None)
    assert again is not None and again.slot is first.slot
    assert again.keep == 4 and again.copy_from is None


def test_the_last_prompt_token_is_always_computed() -> None:
    cache = PromptCache(2)
    hold(cache, [1, 2, 3])
    same = cache.place([1, 2, 3], None)
    assert same is not None and same.keep == 2


def test_a_longer_prefix_in_a_busy_slot_is_copied() -> None:
    cache = PromptCache(2)
    prompt = list(range(100))
    hold(cache, prompt)
    busy = cache.place([*prompt, 500], None)  # takes the slot with the prefix and keeps it busy
    assert busy is not None
    other = cache.place([*prompt, 600], None)
    assert other is not None and other.slot is not busy.slot
    assert other.copy_from is busy.slot and other.keep == 100


def test_a_small_gain_is_not_worth_a_copy() -> None:
    cache = PromptCache(2)
    hold(cache, [1, 2, 3, 4])
    cache.place([1, 2, 3, 4, 5], None)
    other = cache.place([1, 2, 3, 4, 6], None)
    assert other is not None and other.copy_from is None and other.keep == 0


def test_cache_key_pins_a_conversation_to_its_slot() -> None:
    cache = PromptCache(2)
    pinned = hold(cache, [7, 7, 7], key="kitchen")
    hold(cache, [1, 2, 3, 4, 5, 6], key="other")
    again = cache.place([1, 2, 3, 4, 5, 6, 8], "kitchen")
    assert again is not None and again.slot is pinned.slot


def test_no_free_slot_gives_none_and_eviction_is_least_recently_used() -> None:
    cache = PromptCache(2)
    old = hold(cache, [1, 1])
    new = hold(cache, [2, 2])
    assert [slot.seq_id for slot in cache.evictable()] == [old.slot.seq_id, new.slot.seq_id]
    cache.place([3], None)
    cache.place([4], None)
    assert cache.place([5], None) is None
    assert cache.busy_count() == 2 and cache.free_count() == 0


def test_a_conversation_does_not_overwrite_another_for_a_few_shared_tokens() -> None:
    cache = PromptCache(3)
    header = [1, 2, 3]
    first = hold(cache, header + list(range(100, 200)), key="a")
    second = cache.place(header + list(range(300, 400)), "b")
    assert second is not None and second.slot is not first.slot
    assert first.slot.tokens[:4] == [1, 2, 3, 100], "conversation a's cache must survive"


def test_the_same_short_prompt_again_reuses_its_slot_despite_a_long_answer() -> None:
    cache = PromptCache(3)
    prompt = [2, 10, 11, 12]
    first = cache.place(prompt, None)
    assert first is not None
    first.slot.tokens = prompt + list(range(100, 140))  # the prompt and a long answer
    cache.release(first.slot)
    again = cache.place(prompt, None)
    assert again is not None and again.slot is first.slot and again.keep == 3


def test_the_ram_stash_copies_a_slot_only_when_a_placement_loses_much_of_it() -> None:
    from backends.llama_cpp_stash import MIN_TOKENS, PrefixStash

    stash = PrefixStash(max_bytes=1 << 20)
    household = list(range(2400))
    next_command = [*household[:2390], 7, 7]  # the same household prompt, another last turn
    assert not stash.worth_keeping([*household, 1, 2], next_command[:2390])
    assert stash.worth_keeping(household, household[:100])  # another conversation takes the slot
    assert not stash.worth_keeping(household, household[: 2400 - MIN_TOKENS + 1])
    assert not stash.worth_keeping(None, [])
    assert not PrefixStash(max_bytes=0).worth_keeping(household, [])
