import pytest

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.selection import balanced, fixed, random_demos


def _pool():
    labels = ["a"] * 6 + ["b"] * 3 + ["c"] * 3
    return [Example(id=f"p{i}", fields={"text": f"t{i}"}, target=lab, answers=(lab,)) for i, lab in enumerate(labels)]


QUERIES = [Example(id=f"q{i}", fields={}, target="a", answers=("a",)) for i in range(3)]


def test_fixed_uses_listed_ids_in_order_or_the_first_k():
    assert [d.id for d in fixed(_pool(), QUERIES, 2, 0)[0]] == ["p0", "p1"]
    demos = fixed(_pool(), QUERIES, 2, 0, ids=["p7", "p2"])
    assert all([d.id for d in ds] == ["p7", "p2"] for ds in demos)
    with pytest.raises(TaskfitError, match="nope"):
        fixed(_pool(), QUERIES, 2, 0, ids=["nope"])


def test_balanced_has_equal_labels_interleaved_and_shared():
    demos = balanced(_pool(), QUERIES, 6, seed=1, labels=["a", "b", "c"])
    first = demos[0]
    assert [d.target for d in first] == ["a", "b", "c", "a", "b", "c"]
    assert all(ds == first for ds in demos)  # one block for every query: a shared prompt prefix
    assert [d.id for d in balanced(_pool(), QUERIES, 6, seed=1, labels=["a", "b", "c"])[0]] == [d.id for d in first]


def test_random_is_per_query_deterministic_and_never_the_query_itself():
    pool = _pool()
    q = [pool[0], QUERIES[1]]
    a = random_demos(pool, q, 4, seed=3)
    assert a == random_demos(pool, q, 4, seed=3)
    assert a[0] != a[1] and all(d.id != "p0" for d in a[0])
    assert a != random_demos(pool, q, 4, seed=4)
