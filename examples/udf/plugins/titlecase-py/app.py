"""The `titlecase` plugin of examples/udf: a component for the `udf` world
(../../wit/udf.wit), built with componentize-py (see ../../README.md)."""

import wit_world


class WitWorld(wit_world.WitWorld):
    def titlecase(self, text: str) -> str:
        # Words are what whitespace separates; each is capitalised (its
        # first letter upper case, the rest lower case) and joined by one
        # space. Python's own str.title() would also capitalise after an
        # apostrophe ("C'Est").
        return " ".join(word.capitalize() for word in text.split())

    def word_count(self, text: str) -> str:
        return str(len(text.split()))
