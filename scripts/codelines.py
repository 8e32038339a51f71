#!/usr/bin/env python3
"""Hand-written code lines of Rust sources, per file (issue 9, acceptance 4).

A line counts when it holds code: not blank, not only a comment (`//`, `///`, `//!`,
`/* ... */`, nested), and not inside a `#[cfg(test)]` module (the attribute line, the
`mod` line and everything up to the module's closing brace). Comment markers inside string
literals (an `http://` URL, a raw string) are code, as the compiler reads them.

    scripts/codelines.py [--later FILE [--show]] PATH...

PATH is a `.rs` file or a directory (searched for `.rs` files). Prints the count of each
file and the total. With `--later FILE`, code that later issues added is taken out of a
second total, the original keys' total. FILE has one entry a line (`#` starts a comment):

    PATH                   the whole file is later issues' code
    PATH ITEM...           these top-level items of the file are (by name: the struct,
                           enum, fn, trait, const, static or mod called ITEM, every `impl`
                           whose type is ITEM, a `section!` or `spelled!` declaring ITEM,
                           a `macro_rules!` called ITEM; `use(PATH)` for the `use` or
                           `pub use` of PATH, written without spaces: `use(chaos::*)`)
    PATH ITEM.MEMBER...    these members of ITEM are (a field or a variant of a struct or
                           enum, a function of an impl, a key of a `section!`): the lines
                           from the member's doc comment to the line before the next member
    PATH ITEM:NAME...      these statements of the function (or constant) ITEM are: each
                           line in its body whose code begins with the word NAME (after
                           `let`, `let mut`, or one of `(`, `"`, `&`: `let leader = ..`,
                           `leader: ..`, `leader,`, `"leader",`), with the lines that
                           continue it (deeper in brackets); for code that serves only
                           later keys inside a function that serves original ones too

A PATH in FILE is written as this script prints it (relative to the current directory:
run it from the repository's root). `--show` prints every line taken out, to audit FILE.

    scripts/codelines.py --later scripts/codelines-later.txt crates/spec/src
"""

import argparse
import os
import re
import sys


def code_mask(text):
    """For each line of `text`, whether it holds code (outside comments), and the bracket
    depth at the line's start (`{`, `(` and `[`, outside comments and strings): the lines of
    a signature or a call broken over several lines are inside their item."""
    lines = text.split("\n")
    has_code = [False] * len(lines)
    depth_at = [0] * len(lines)
    i, n, line = 0, len(text), 0
    depth = 0
    block = 0  # nesting of /* */
    line_start = True
    depth_at[0] = 0
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            if line < len(lines):
                depth_at[line] = depth
            i += 1
            continue
        if block:
            if text.startswith("/*", i):
                block += 1
                i += 2
            elif text.startswith("*/", i):
                block -= 1
                i += 2
            else:
                i += 1
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("/*", i):
            block = 1
            i += 2
            continue
        if c.isspace():
            i += 1
            continue
        has_code[line] = True
        # Raw strings: r"..", r#".."#, br#".."#.
        m = re.compile(r'b?r(#*)"').match(text, i)
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            for k in range(i, j):
                if text[k] == "\n":
                    line += 1
                    if line < len(lines):
                        depth_at[line] = depth
                        has_code[line] = True
            i = j
            continue
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                if i < n and text[i] == "\n":
                    line += 1
                    if line < len(lines):
                        depth_at[line] = depth
                        has_code[line] = True
                i += 1
            i += 1
            continue
        if c == "'":
            # A char literal ('a', '\n', '\'', '{'), else a lifetime or label.
            m = re.compile(r"'(\\.[^']*|[^'\\])'").match(text, i)
            if m:
                i = m.end()
                continue
            i += 1
            continue
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
        i += 1
    # A line that only continues a multi-line string begun above keeps has_code True.
    return lines, has_code, depth_at


def test_modules(lines, has_code, depth_at):
    """Line indices inside `#[cfg(test)]` modules (attribute to closing brace)."""
    out = set()
    k = 0
    while k < len(lines):
        if lines[k].strip() == "#[cfg(test)]":
            j = k + 1
            while j < len(lines) and not has_code[j]:
                j += 1
            if j < len(lines) and re.match(r"\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", lines[j]):
                # The module's last line is the one after which the depth is back to the
                # `mod` line's.
                d, e = depth_at[j], j + 1
                while e + 1 < len(lines) and depth_at[e + 1] > d:
                    e += 1
                out.update(range(k, e + 1))
                k = e + 1
                continue
        k += 1
    return out


def counted_lines(text):
    """Indices of the lines that count."""
    lines, has_code, depth_at = code_mask(text)
    tests = test_modules(lines, has_code, depth_at)
    return lines, depth_at, [i for i in range(len(lines)) if has_code[i] and i not in tests]


ITEM = re.compile(
    r"\s*(?:pub(?:\([^)]*\))?\s+)?(?:(?:const|async|unsafe)\s+)*"
    r"(?:struct|enum|fn|trait|const|static|type|mod)\s+(\w+)"
)
IMPL = re.compile(r"\s*impl(?:<[^>]*>)?\s+(?:[\w:<>, ]+\s+for\s+)?(?:[\w:]+::)?(\w+)")
SECTION_STRUCT = re.compile(r"\s*(?:pub(?:\([^)]*\))?\s+)?(?:struct|enum)\s+(\w+)")
DECLARING = ("section!", "crate::section!", "spelled!", "crate::spelled!")
MACRO = re.compile(r"\s*macro_rules!\s+(\w+)")
USE = re.compile(r"\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);")
MEMBER = re.compile(
    r"\s*(?:pub(?:\([^)]*\))?\s+)?(?:(?:const|async|unsafe)\s+)*(?:fn\s+)?(\w+)\b"
)


def items(lines, depth_at):
    """Top-level items: (name, first line incl. doc and attributes, last line)."""
    out = []
    start = None
    k = 0
    while k < len(lines):
        s = lines[k].strip()
        if depth_at[k] != 0 or not s:
            k += 1
            start = None if not s else start
            continue
        if start is None:
            start = k
        if s.startswith("//") or s.startswith("#["):
            k += 1
            continue
        name = None
        m = MACRO.match(lines[k]) or IMPL.match(lines[k]) or ITEM.match(lines[k])
        u = USE.match(lines[k])
        if m:
            name = m.group(1)
        elif u:
            name = "use(" + re.sub(r"\s+", "", u.group(1)) + ")"
        elif s.startswith(DECLARING):
            for j in range(k + 1, min(k + 40, len(lines))):
                if depth_at[j] == 1:
                    sm = SECTION_STRUCT.match(lines[j])
                    if sm:
                        name = sm.group(1)
                        break
        end = k
        while end + 1 < len(lines) and depth_at[end + 1] != 0:
            end += 1
        # The closing line (`}` or `}` + `;`) is at depth 0 again when it opens nothing.
        if end + 1 < len(lines) and end > k and lines[end + 1].strip().startswith(("}", ")")):
            end += 1
        out.append((name, start, end))
        start = None
        k = end + 1
    return out


def members(lines, depth_at, first, last):
    """Members of an item spanning `first..=last` at the item's inner depth: (name, first
    line incl. doc, last line before the next member or the closing brace)."""
    body = [k for k in range(first, last + 1) if lines[k].strip()]
    opens = [k for k in body if depth_at[k] > depth_at[first]]
    if not opens:
        return []
    inner = min(depth_at[k] for k in opens)
    # For section!, keys are one level deeper than the struct's braces.
    out, start = [], None
    heads = []
    for k in opens:
        if depth_at[k] != inner:
            continue
        s = lines[k].strip()
        if s.startswith("//") or s.startswith("#["):
            if start is None:
                start = k
            continue
        m = MEMBER.match(lines[k])
        if m and not s.startswith("}"):
            heads.append((m.group(1), start if start is not None else k, k))
        start = None
    for idx, (name, s, k) in enumerate(heads):
        nxt = heads[idx + 1][1] - 1 if idx + 1 < len(heads) else max(opens)
        # Stop before the item's closing brace.
        while nxt > k and lines[nxt].strip() in ("}", "};", "})", "}}"):
            if depth_at[nxt] < inner or (depth_at[nxt] == inner and idx + 1 == len(heads)):
                nxt -= 1
            else:
                break
        out.append((name, s, nxt))
    return out


def section_members(lines, depth_at, first, last):
    """Keys of a `section!`: the struct's body is at depth 2."""
    out, start, heads = [], None, []
    for k in range(first, last + 1):
        s = lines[k].strip()
        if depth_at[k] != 2 or not s:
            continue
        if s.startswith("//") or s.startswith("#["):
            if start is None:
                start = k
            continue
        m = re.match(r"\s*(\w+)\s*(?:as\s+\"[^\"]*\"\s*)?:", lines[k])
        if m:
            heads.append((m.group(1), start if start is not None else k, k))
        start = None
    for idx, (name, s, k) in enumerate(heads):
        if idx + 1 < len(heads):
            nxt = heads[idx + 1][1] - 1
        else:
            nxt = k
            while nxt + 1 <= last and depth_at[nxt + 1] >= 2 and lines[nxt + 1].strip() != "}":
                nxt += 1
        out.append((name, s, nxt))
    return out


STATEMENT = re.compile(r"\s*(?:let\s+(?:mut\s+)?)?[(\"&]?\s*(\w+)\b")


def statements(lines, depth_at, first, last, wanted):
    """Lines of the body of the item spanning `first..=last` whose code begins with a name
    in `wanted`, with the lines that continue them: (name, line) pairs."""
    out = []
    k = first
    while k <= last:
        m = STATEMENT.match(lines[k])
        if depth_at[k] > depth_at[first] and m and m.group(1) in wanted:
            end = k
            while end + 1 <= last and depth_at[end + 1] > depth_at[k]:
                end += 1
            out.extend((m.group(1), j) for j in range(k, end + 1))
            k = end + 1
            continue
        k += 1
    return out


def attributed(path, text, names):
    """The line indices of `text` that the entries `names` (ITEM, ITEM.MEMBER or
    ITEM:NAME) cover."""
    lines, depth_at, _ = counted_lines(text)
    top = items(lines, depth_at)
    out, found = set(), set()
    for name, a, b in top:
        if name is None:
            continue
        if name in names:
            out.update(range(a, b + 1))
            found.add(name)
        wanted = {n.split(":", 1)[1] for n in names if n.startswith(name + ":")}
        for stmt, k in statements(lines, depth_at, a, b, wanted) if wanted else []:
            out.add(k)
            found.add(name + ":" + stmt)
        wanted = {n.split(".", 1)[1] for n in names if n.startswith(name + ".")}
        if wanted:
            is_section = lines[a:b + 1] and any(
                l.strip().startswith(("section!", "crate::section!")) for l in lines[a:b + 1]
            )
            ms = (section_members if is_section else members)(lines, depth_at, a, b)
            for m, ma, mb in ms:
                if m in wanted:
                    out.update(range(ma, mb + 1))
                    found.add(name + "." + m)
    missing = set(names) - found
    if missing:
        sys.exit(f"{path}: not found: {', '.join(sorted(missing))}")
    return out


def rust_files(paths):
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in sorted(os.walk(p)):
                for f in sorted(files):
                    if f.endswith(".rs"):
                        yield os.path.join(root, f)
        else:
            yield p


def read_later(path):
    later = {}
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].split()
            if line:
                later.setdefault(line[0], set()).update(line[1:] or ["*"])
    return later


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--later", help="file naming the files and items of later issues")
    ap.add_argument(
        "--show", action="store_true", help="with --later: print the lines taken out, per file"
    )
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()
    later = read_later(args.later) if args.later else {}
    total = original = 0
    seen = set()
    for path in rust_files(args.paths):
        rel = os.path.normpath(path)
        seen.add(rel)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        lines, _, counted = counted_lines(text)
        n = len(counted)
        total += n
        names = later.get(rel)
        if names is None:
            orig = n
        elif "*" in names:
            orig = 0
        else:
            out = attributed(rel, text, names)
            orig = sum(1 for k in counted if k not in out)
            if args.show:
                for k in counted:
                    if k in out:
                        print(f"  later {rel}:{k + 1}: {lines[k].strip()}")
        original += orig
        if later:
            print(f"{n:6} {orig:6}  {rel}")
        else:
            print(f"{n:6}  {rel}")
    unknown = set(later) - seen
    if unknown:
        sys.exit(f"--later names files not counted: {', '.join(sorted(unknown))}")
    if later:
        print(f"{total:6} {original:6}  total (all, original keys)")
    else:
        print(f"{total:6}  total")


if __name__ == "__main__":
    main()
