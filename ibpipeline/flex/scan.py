"""Vectorized scanner for the regular shape of Flex XML: bytes -> attribute values as Arrow strings.

IBKR writes Activity Flex XML in a narrow subset of XML: elements whose attributes are all
double-quoted, no text content, comments, CDATA or DOCTYPE, UTF-8. For bytes of that shape the
scanner finds every attribute value with NumPy (the positions of ``"`` and ``<``) and cuts the
document into zero-copy Arrow string *pieces*: each value, and between values the markup
(``<Trade accountId="``, ``" currency="``, ``" />\\n``). Only the distinct markup pieces (a few
hundred per statement) are checked and read in Python; per-row work is vectorized.

Well-formedness is checked, not assumed: every markup piece must match the grammar of its place
(element start with its first attribute name, attribute separator, element end, or a bare tag),
values may hold no ``<`` and only the five predefined entities and character references,
the text between elements is whitespace, the bytes are UTF-8, attribute names within an element
are distinct, and tags nest (checked by the caller, which walks the elements). Anything outside
that shape raises :class:`IrregularXml`; the caller then parses the same bytes with lxml, which
reads any XML and reports its errors. Values are exactly what an XML parser returns: entities and
character references decoded, literal tabs and line breaks in a value normalized to spaces (XML
attribute-value normalization), CR LF read as LF.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_NAME = r"(?!xmlns\b)[A-Za-z_][\w.-]*"  # no namespaces (lxml would rename the tags)
_HEAD = re.compile(rf"<({_NAME})\s+({_NAME})\s*=\s*\"")  # element start + its first attribute
_INTRA = re.compile(rf"\"\s+({_NAME})\s*=\s*\"")  # between two attribute values
_TAIL = re.compile(r"\"\s*(/?)>\s*")  # after the last value: element end, then whitespace
_BARE = re.compile(rf"<(/?)({_NAME})\s*(/?)>\s*")  # a tag without attributes
_DECL_HEAD = re.compile(r"<\?xml\s+version\s*=\s*\"")
_DECL_TAIL = re.compile(r"\"\s*\?>\s*")
_ENTITY = re.compile(r"&(?:#x([0-9A-Fa-f]+)|#([0-9]+)|(amp|lt|gt|quot|apos));")
_PREDEFINED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_UTF8_ENCODINGS = {"utf-8", "utf8", "us-ascii", "ascii"}

HEAD, INTRA, TAIL, BARE, DECL_HEAD, DECL_TAIL = range(6)
"""Kinds of markup piece."""
BOM = b"\xef\xbb\xbf"
BLOCK_BYTES = 8 << 20
"""Bytes scanned at a time (cut before a ``<``): bounds the scanner's working memory (~20 bytes of
NumPy and Arrow per byte scanned). 8 MiB parses a 297 MB statement in 30 % less CPU than 32 MiB
did (its arrays stay nearer the caches) and peaks ~150 MiB lower; 4 MiB gains nothing more."""


_LT, _QUOTE, _SPECIAL, _HIGH = 1, 2, 3, 4
_CLASS = np.zeros(256, np.uint8)
_CLASS[0x3C], _CLASS[0x22], _CLASS[0x26] = _LT, _QUOTE, _SPECIAL
_CLASS[:0x20] = _SPECIAL
_CLASS[0x80:] = _HIGH


def _string_views(u8: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """A ``string_view`` array of the byte ranges ``[starts, starts + lengths)`` of ``u8``,
    without copying the long ones (Arrow's view layout: length, then 12 inline bytes, or a
    4-byte prefix, buffer 0 and the offset)."""
    size = len(u8)
    near_end = starts > size - 12
    windows = np.lib.stride_tricks.as_strided(u8, shape=(max(size - 11, 0), 12), strides=(1, 1))
    view = np.zeros((len(starts), 4), np.int32)
    view[:, 0] = lengths
    short = lengths <= 12
    fold = np.flatnonzero(short & ~near_end)
    inline = windows[starts[fold]]
    inline[np.arange(12)[None, :] >= lengths[fold][:, None]] = 0
    view[fold, 1:] = inline.view(np.int32).reshape(-1, 3)
    for i in np.flatnonzero(near_end).tolist():  # at most a few pieces at the very end
        raw = np.zeros(12, np.uint8)
        k = int(lengths[i])
        raw[:k] = u8[starts[i] : starts[i] + k]
        if k <= 12:
            view[i, 1:] = raw.view(np.int32)
    long = np.flatnonzero(~short)
    view[long, 1] = windows[starts[long], :4].copy().view(np.int32).reshape(-1)
    view[long, 3] = starts[long]
    return pa.Array.from_buffers(
        pa.string_view(), len(starts), [None, pa.py_buffer(view), pa.py_buffer(u8)]
    )


class IrregularXml(Exception):
    """The bytes are not in the regular shape the scanner reads (parse them with lxml instead)."""


@dataclass(frozen=True)
class Markup:
    """One distinct markup piece: its kind, and what it says.

    HEAD: ``tag`` and ``name`` (first attribute); INTRA: ``name``; TAIL: ``self_closing``;
    BARE: ``tag``, ``closing``, ``self_closing``; DECL_HEAD/DECL_TAIL: nothing (``name`` of a
    DECL_HEAD is ``version``).
    """

    kind: int
    tag: str = ""
    name: str = ""
    closing: bool = False
    self_closing: bool = False


def _markup(text: str) -> Markup:
    if text.startswith("<"):
        if m := _HEAD.fullmatch(text):
            return Markup(HEAD, tag=m.group(1), name=m.group(2))
        if m := _BARE.fullmatch(text):
            closing, self_closing = bool(m.group(1)), bool(m.group(3))
            if closing and self_closing:
                raise IrregularXml(f"bad tag {text[:80]!r}")
            return Markup(BARE, tag=m.group(2), closing=closing, self_closing=self_closing)
        if _DECL_HEAD.fullmatch(text):
            return Markup(DECL_HEAD, name="version")
    elif text.startswith('"'):
        if m := _INTRA.fullmatch(text):
            return Markup(INTRA, name=m.group(1))
        if m := _TAIL.fullmatch(text):
            return Markup(TAIL, self_closing=bool(m.group(1)))
        if _DECL_TAIL.fullmatch(text):
            return Markup(DECL_TAIL)
    raise IrregularXml(f"markup outside the regular Flex shape: {text[:80]!r}")


def _char(match: re.Match[str]) -> str:
    hex_code, dec_code, name = match.groups()
    if name:
        return _PREDEFINED[name]
    code = int(hex_code, 16) if hex_code else int(dec_code)
    if not (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    ):
        raise IrregularXml(f"character reference to a character XML forbids: {match.group(0)}")
    return chr(code)


def _decode(raw: str) -> str:
    """What an XML parser reads for the raw text between an attribute's quotes: CR LF and CR read
    as LF, then tab and LF as a space (attribute-value normalization), then the predefined
    entities and character references decoded. Raises IrregularXml for any other ``&``."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ").replace("\n", " ")
    if "&" not in text:
        return text
    if "&" in _ENTITY.sub("", text):
        raise IrregularXml(f"undefined entity or bare '&' in an attribute value: {raw[:80]!r}")
    return _ENTITY.sub(_char, text)


class ChunkScan:
    """The pieces of one chunk of a document: a run of whole elements starting with ``<``.

    ``segments``: one per ``<``: an element start or end tag (with the whitespace after it).
    Per segment: ``first`` (index of its first piece), ``end`` (one past its last piece),
    ``kind``/``tag``/``closing``/``self_closing`` from its markup. Values of a segment are the
    pieces ``first + 1, first + 3, ..., end - 2`` (``n_values`` of them).
    """

    def __init__(self, buf: bytes | memoryview, first_chunk: bool) -> None:
        u8 = np.frombuffer(buf, np.uint8)
        size = len(u8)
        if size == 0 or u8[0] != 0x3C:
            raise IrregularXml("chunk does not start with '<'")
        if size >= 1 << 31:
            raise IrregularXml("chunk too large for 32-bit offsets")
        # one pass over the bytes: where the '<', '"', '&', control and non-ASCII bytes are
        shifted = u8 - np.uint8(0x20)  # wraps: controls and bytes >= 0x80 become >= 0x60
        at = np.flatnonzero((shifted >= 0x60) | (u8 == 0x3C) | (u8 == 0x22) | (u8 == 0x26))
        del shifted
        at = at.astype(np.int32)
        cls = _CLASS[u8[at]]
        lt, quotes = at[cls == _LT], at[cls == _QUOTE]
        if len(quotes) % 2:
            raise IrregularXml("odd number of '\"'")
        if len(quotes) and np.any(np.searchsorted(quotes, lt) & 1):
            raise IrregularXml("'<' inside an attribute value")
        special = at[cls == _SPECIAL]  # '&' and controls, line breaks included
        inside = (np.searchsorted(quotes, special) & 1).astype(bool)
        byte = u8[special]
        space = (byte == 0x0A) | (byte == 0x0D) | (byte == 0x09)
        if np.any(~inside & ~space) or np.any(inside & ~space & (byte != 0x26)):
            raise IrregularXml("a control character, or '&' outside attribute values")
        high = at[cls == _HIGH]
        if len(high):
            lead = high[(u8[high] == 0xEF) & (high < size - 2)]  # U+FFFE/U+FFFF: EF BF BE/BF
            if np.any((u8[lead + 1] == 0xBF) & ((u8[lead + 2] & 0xFE) == 0xBE)):
                raise IrregularXml("U+FFFE or U+FFFF, which XML forbids")
        m = len(quotes) // 2
        # pieces: value i is [quote 2i + 1, quote 2i + 1); markup fills the rest, cut at each '<'
        cuts = np.empty(2 * m, np.int32)
        cuts[0::2] = quotes[0::2] + 1
        cuts[1::2] = quotes[1::2]
        at = np.searchsorted(cuts, lt)
        offsets = np.append(np.insert(cuts, at, lt), np.int32(size))
        del cuts
        self.pieces = pa.StringArray.from_buffers(
            len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(buf)
        )
        if len(high):
            try:
                self.pieces.validate(full=True)
            except pa.ArrowInvalid as exc:
                raise IrregularXml(f"not UTF-8: {exc}") from None
        n_pieces = len(offsets) - 1
        # piece index of value i: 2i plus the '<' cuts inserted before it
        inserted = np.bincount(at, minlength=2 * m + 1).cumsum()
        value_at = 2 * np.arange(m, dtype=np.int64) + inserted[0 : 2 * m : 2]
        del inserted
        is_value = np.zeros(n_pieces, bool)
        is_value[value_at] = True
        markup_at = np.flatnonzero(~is_value)
        del is_value
        starts = offsets[markup_at]
        encoded = pc.dictionary_encode(_string_views(u8, starts, offsets[markup_at + 1] - starts))
        self.markups = [_markup(t) for t in encoded.dictionary.to_pylist()]
        code = np.full(n_pieces, -1, np.int32)
        code[markup_at] = encoded.indices.to_numpy()
        self.code = code
        # values an XML parser changes (entities, literal whitespace): decoded when taken
        fix = np.searchsorted(offsets, special[inside], side="right") - 1
        self.fix: np.ndarray | None = None
        if len(fix):
            self.fix = np.zeros(n_pieces, bool)
            self.fix[fix] = True
        # segments
        self.first = at + np.arange(len(lt), dtype=np.int64)
        self.end = np.append(self.first[1:], n_pieces)
        kinds = np.array([mk.kind for mk in self.markups], np.int8)
        first_code = code[self.first]
        last_code = code[self.end - 1]
        if np.any(first_code < 0) or np.any(last_code < 0):
            raise IrregularXml("a value at an element boundary")
        self.kind = kinds[first_code]
        self.n_values = (self.end - self.first - 1) // 2
        last_kind = kinds[last_code]
        bare, decl = self.kind == BARE, self.kind == DECL_HEAD
        ends = np.where(decl, last_kind == DECL_TAIL, last_kind == TAIL)
        if not np.all(np.where(bare, self.end - self.first == 1, ends)) or not np.all(
            np.isin(self.kind, (HEAD, BARE, DECL_HEAD))
        ):
            raise IrregularXml("an element without its end")
        if np.any(decl) and not (first_chunk and np.flatnonzero(decl).tolist() == [0]):
            raise IrregularXml("XML declaration not at the start of the document")
        flags = np.array([(mk.closing, mk.self_closing) for mk in self.markups], bool).reshape(
            -1, 2
        )
        self.closing = np.where(bare, flags[first_code, 0], False)
        self.self_closing = np.where(bare, flags[first_code, 1], flags[last_code, 1])
        self.first_code = first_code

    def depth(self, open_elements: int) -> np.ndarray:
        """Elements open before each segment, given ``open_elements`` open when the chunk starts
        (an end tag counts its own element as open)."""
        delta = np.where(
            self.closing, -1, np.where(self.self_closing | (self.kind == DECL_HEAD), 0, 1)
        )
        return open_elements + np.cumsum(delta) - delta

    def check_declaration(self, segment: int) -> None:
        """Raise IrregularXml unless the XML declaration ``segment`` declares UTF-8 (or nothing)."""
        encoding = self.attributes(segment).get("encoding", "utf-8").lower()
        if encoding not in _UTF8_ENCODINGS:
            raise IrregularXml(f"encoding {encoding!r}")

    def attribute_values(self, name: str) -> set[str]:
        """The distinct values of attribute ``name`` over every element of the chunk."""
        codes = [
            i for i, mk in enumerate(self.markups) if mk.kind in (HEAD, INTRA) and mk.name == name
        ]
        if not codes:
            return set()
        at = np.flatnonzero(np.isin(self.code, codes)) + 1
        values = self.pieces.take(pa.array(at))
        if self.fix is not None and self.fix[at].any():
            return {_decode(v) for v in pc.unique(values).to_pylist()}
        return set(pc.unique(values).to_pylist())

    @cached_property
    def tag_ids(self) -> tuple[np.ndarray, list[str]]:
        """(tag id per segment, tag names)."""
        names: dict[str, int] = {}
        per_code = np.array([names.setdefault(mk.tag, len(names)) for mk in self.markups], np.int32)
        return per_code[self.first_code], list(names)

    def tag(self, segment: int) -> str:
        return self.markups[self.first_code[segment]].tag

    def attributes(self, segment: int) -> dict[str, str]:
        """Names and values of one element (values as an XML parser reads them)."""
        start, end = int(self.first[segment]), int(self.end[segment])
        if end - start == 1:
            return {}
        pieces = self.pieces.slice(start, end - start).to_pylist()
        names = [self.markups[c].name for c in self.code[start : end - 1 : 2]]
        out = dict(zip(names, map(_decode, pieces[1::2]), strict=True))
        if len(out) != len(names):
            raise IrregularXml(f"duplicate attribute in <{self.tag(segment)}>")
        return out

    def signatures(self, rows: np.ndarray) -> tuple[np.ndarray, list[tuple[str, tuple[str, ...]]]]:
        """For element segments ``rows`` (each with at least one attribute): signature id per row
        and, per id, (tag, attribute names in document order)."""
        heads = self.first_code[rows]
        counts = self.n_values[rows]
        key = heads.astype(np.int64) * (1 << 20) + counts
        groups, inverse = np.unique(key, return_inverse=True)
        sig = np.empty(len(rows), np.int64)
        out: list[tuple[str, tuple[str, ...]]] = []
        for g, k in enumerate(groups.tolist()):
            members = np.flatnonzero(inverse == g)
            head, count = divmod(k, 1 << 20)
            if count > 1:
                at = self.first[rows[members]][:, None] + 2 + 2 * np.arange(count - 1)
                matrix = self.code[at]
                if np.all(matrix == matrix[0]):
                    uniq, which = matrix[:1], np.zeros(len(members), np.int64)
                else:
                    uniq, which = np.unique(matrix, axis=0, return_inverse=True)
                    which = which.reshape(-1)
            else:
                uniq, which = np.zeros((1, 0), np.int32), np.zeros(len(members), np.int64)
            base = len(out)
            for u in uniq:
                markup = self.markups[head]
                names = (markup.name, *(self.markups[c].name for c in u.tolist()))
                if len(set(names)) != len(names):
                    raise IrregularXml(f"duplicate attribute in <{markup.tag}>")
                out.append((markup.tag, names))
            sig[members] = base + which
        return sig, out

    def values(self, rows: np.ndarray, slot: int) -> pa.Array:
        """Value of attribute number ``slot`` (document order) of each row segment."""
        at = self.first[rows] + 1 + 2 * slot
        values = self.pieces.take(pa.array(at))
        if self.fix is not None:
            hit = self.fix[at]
            if hit.any():
                fixed = [_decode(v) for v in values.filter(pa.array(hit)).to_pylist()]
                values = pc.replace_with_mask(values, pa.array(hit), pa.array(fixed, pa.string()))
        return values


def blocks(data: bytes | str | os.PathLike, size: int = BLOCK_BYTES) -> Iterator[memoryview]:
    """A document (bytes, or a file read as it goes) in blocks of about ``size`` bytes, each cut
    just before a ``<`` (the last one at the end)."""
    if isinstance(data, bytes):
        view, total, start = memoryview(data), len(data), 0
        while start < total:
            end = min(start + size, total)
            if end < total:
                cut = data.rfind(b"<", start + 1, end)
                if cut > start:
                    end = cut
                else:  # no '<' in the block: up to the next one
                    end = data.find(b"<", end)
                    end = total if end < 0 else end
            yield view[start:end]
            start = end
        return
    with open(data, "rb") as fh:
        carry = b""
        while True:
            more = fh.read(size)
            buf = carry + more
            if not more:
                if buf:
                    yield memoryview(buf)
                return
            cut = buf.rfind(b"<", 1)
            if cut <= 0:
                carry = buf
                continue
            carry = buf[cut:]
            yield memoryview(buf)[:cut]


@dataclass(frozen=True)
class DocumentScan:
    """What :func:`scan_document` found: the root tag, every element's ``accountId`` values
    (raw, null tokens included) and the ``FlexStatement`` elements' own ``accountId`` (None when
    one has none)."""

    root: str
    account_ids: frozenset[str]
    statement_account_ids: tuple[str | None, ...]


def scan_document(data: bytes, size: int = BLOCK_BYTES) -> DocumentScan:
    """Check that ``data`` is a well-formed XML document of the regular Flex shape (the scanner's
    checks, plus one root element and tags that nest) and read its account ids, without building
    any element. Raises IrregularXml for any other document (lxml then checks and reads it)."""
    stack: list[str] = []
    root: str | None = None
    ids: set[str] = set()
    statements: list[str | None] = []
    first = True
    for block in blocks(data, size):
        if first and block[:3] == BOM:
            block = block[3:]
        scan = ChunkScan(block, first)
        decl = scan.kind == DECL_HEAD
        depth = scan.depth(len(stack))
        for s in np.flatnonzero((depth == 0) & ~decl).tolist():
            if root is not None or scan.closing[s]:
                raise IrregularXml("content after the root element")
            root = scan.tag(s)
        for s in np.flatnonzero(decl).tolist():
            scan.check_declaration(s)
        for s in np.flatnonzero(~scan.self_closing & ~decl).tolist():
            tag = scan.tag(s)
            if not scan.closing[s]:
                stack.append(tag)
            elif not stack or stack.pop() != tag:
                raise IrregularXml(f"</{tag}> does not close the open element")
        tag_of, tags = scan.tag_ids
        if "FlexStatement" in tags:
            opening = np.flatnonzero((tag_of == tags.index("FlexStatement")) & ~scan.closing)
            statements += [scan.attributes(s).get("accountId") for s in opening.tolist()]
        ids |= scan.attribute_values("accountId")
        first = False
    if root is None or stack:
        raise IrregularXml("document ends inside an element, or has no root")
    return DocumentScan(root, frozenset(ids), tuple(statements))
