"""Corpus and Queries built by hand (the Python API) check what the dataset loaders check: ids are strings or
integers and unique, texts and titles are strings; each error names the document or query."""

from __future__ import annotations

import numpy as np
import pytest

from ragopt.errors import DataError
from ragopt.types import Corpus, Queries


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # a repeated id ranked the same id twice in one run, silently
        ((["d1", "d1"], ["apple", "banana"]), r"^corpus: the id 'd1' is given to more than one document$"),
        # the others failed hashing the corpus: "'NoneType' object has no attribute 'encode'"
        (([None], ["x"]), r"^corpus: an id must be a string or an integer, got NoneType None$"),
        ((["d1", "d2"], ["apple", 3]), r"^corpus: the text of document 'd2' is int 3, not a string$"),
        (
            (["d1", "d2"], ["a", "b"], [None, "t"]),
            r"^corpus: the title of document 'd1' is NoneType None, not a string$",
        ),
        ((["d1", 1, "1"], ["a", "b", "c"]), r"^corpus: the id '1' is given to more than one document$"),
    ],
)
def test_a_corpus_with_bad_ids_or_texts_is_named(args, message):
    with pytest.raises(DataError, match=message):
        Corpus(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((["q1", "q1"], ["a", "b"]), r"^queries: the id 'q1' is given to more than one query$"),
        (([True], ["a"]), r"^queries: an id must be a string or an integer, got bool True$"),
        ((["q1"], [b"a"]), r"^queries: the text of query 'q1' is bytes b'a', not a string$"),
    ],
)
def test_queries_with_bad_ids_or_texts_are_named(args, message):
    with pytest.raises(DataError, match=message):
        Queries(*args)


def test_integer_ids_and_str_subclasses_are_taken_as_plain_strings():
    class Text(str):
        pass

    c = Corpus([7, np.int64(8), Text("d9")], [Text("x"), "y", "z"], [Text("t"), "", ""])
    assert c.ids == ["7", "8", "d9"] and all(type(i) is str for i in c.ids) and c.texts[0] == "x"
    assert Queries([1, "q2"], ["a", Text("b")]).ids == ["1", "q2"]
