"""Split a pasted shell command line into words the way a POSIX shell would, remembering where
each word starts so that errors can point at the line and column. `shlex.split` cannot say where
an unterminated quote began, which is the one thing a user fixing a pasted command needs."""

from __future__ import annotations

from dataclasses import dataclass

# Inside double quotes a backslash escapes only these characters (POSIX); elsewhere it is literal.
_DOUBLE_QUOTE_ESCAPES = frozenset('"\\$`')


@dataclass(frozen=True)
class Word:
    text: str
    line: int
    column: int

    def where(self) -> str:
        return f"line {self.line}, column {self.column}"


class ShellSyntaxError(ValueError):
    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"{message} at line {line}, column {column}")
        self.line = line
        self.column = column


class _Cursor:
    def __init__(self, text: str) -> None:
        self.text = text
        self.index = 0
        self.line = 1
        self.column = 1

    def peek(self, ahead: int = 0) -> str:
        position = self.index + ahead
        return self.text[position] if position < len(self.text) else ""

    def take(self) -> str:
        char = self.text[self.index]
        self.index += 1
        if char == "\n":
            self.line, self.column = self.line + 1, 1
        else:
            self.column += 1
        return char

    def at_line_continuation(self) -> bool:
        return self.peek() == "\\" and (self.peek(1) == "\n" or (self.peek(1) == "\r" and self.peek(2) == "\n"))

    def skip_line_continuation(self) -> None:
        self.take()
        if self.peek() == "\r":
            self.take()
        self.take()


def split_words(text: str) -> list[Word]:
    """Words of `text`; backslash-newline joins lines, `#` at a word start begins a comment."""
    cursor = _Cursor(text)
    words: list[Word] = []
    while True:
        _skip_blanks(cursor)
        if not cursor.peek():
            return words
        if cursor.peek() == "#":
            while cursor.peek() and cursor.peek() != "\n":
                cursor.take()
            continue
        words.append(_read_word(cursor))


def _skip_blanks(cursor: _Cursor) -> None:
    while cursor.peek():
        if cursor.at_line_continuation():
            cursor.skip_line_continuation()
        elif cursor.peek().isspace():
            cursor.take()
        else:
            return


def _read_word(cursor: _Cursor) -> Word:
    line, column = cursor.line, cursor.column
    parts: list[str] = []
    while cursor.peek() and not cursor.peek().isspace():
        if cursor.at_line_continuation():
            cursor.skip_line_continuation()
        elif cursor.peek() == "'":
            parts.append(_read_single_quoted(cursor))
        elif cursor.peek() == '"':
            parts.append(_read_double_quoted(cursor))
        elif cursor.peek() == "\\":
            escape_line, escape_column = cursor.line, cursor.column
            cursor.take()
            if not cursor.peek():
                raise ShellSyntaxError("a backslash ends the command with nothing to escape", escape_line, escape_column)
            parts.append(cursor.take())
        else:
            parts.append(cursor.take())
    return Word("".join(parts), line, column)


def _read_single_quoted(cursor: _Cursor) -> str:
    line, column = cursor.line, cursor.column
    cursor.take()
    parts: list[str] = []
    while cursor.peek() != "'":
        if not cursor.peek():
            raise ShellSyntaxError("unterminated ' quote opened", line, column)
        parts.append(cursor.take())
    cursor.take()
    return "".join(parts)


def _read_double_quoted(cursor: _Cursor) -> str:
    line, column = cursor.line, cursor.column
    cursor.take()
    parts: list[str] = []
    while cursor.peek() != '"':
        if not cursor.peek():
            raise ShellSyntaxError('unterminated " quote opened', line, column)
        if cursor.at_line_continuation():
            cursor.skip_line_continuation()
        elif cursor.peek() == "\\" and cursor.peek(1) in _DOUBLE_QUOTE_ESCAPES and cursor.peek(1):
            cursor.take()
            parts.append(cursor.take())
        else:
            parts.append(cursor.take())
    cursor.take()
    return "".join(parts)
