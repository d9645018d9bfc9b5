"""Read an HTML page into a flat list of elements (stdlib html.parser), for report tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parents: tuple[str, ...]          # ids of the enclosing elements that have one
    text: list[str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _Collector(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "source", "wbr", "area", "base", "embed", "param",
            "track"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.stack: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parents = tuple(e.attrs["id"] for e in self.stack if "id" in e.attrs)
        el = Element(tag, {k: v or "" for k, v in attrs}, parents)
        self.elements.append(el)
        if tag not in self.VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parents = tuple(e.attrs["id"] for e in self.stack if "id" in e.attrs)
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}, parents))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                break

    def handle_data(self, data: str) -> None:
        for el in self.stack:
            el.text.append(data)


def parse(page: str) -> list[Element]:
    c = _Collector()
    c.feed(page)
    c.close()
    return c.elements


def by_id(elements: list[Element], id_: str) -> Element:
    found = [e for e in elements if e.attrs.get("id") == id_]
    assert len(found) == 1, f"{len(found)} elements with id {id_!r}"
    return found[0]


def with_class(elements: list[Element], cls: str, inside: str | None = None) -> list[Element]:
    return [e for e in elements if cls in e.classes and (inside is None or inside in e.parents)]


def inside(elements: list[Element], id_: str, tag: str | None = None) -> list[Element]:
    return [e for e in elements if id_ in e.parents and (tag is None or e.tag == tag)]
