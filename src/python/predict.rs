//! Which optimization levels of a source are certainly identical, decided from its text so
//! that only the distinct levels are compiled (the rest are linked).
//!
//! CPython's levels differ only as follows: level 1 drops `assert` statements and folds the
//! name `__debug__` to False; level 2 also drops docstrings (the first statement of a module,
//! class or function body when it is a string literal). So level 1 equals level 0 when the
//! source has no `assert` and no `__debug__`, and level 2 equals level 1 when it has no
//! docstring. A tokenizer that reads the bytes as every CPython from 3.6 to 3.15 does decides,
//! conservatively: anything it cannot vouch for keeps every level compiled. A wrong "identical"
//! is a silent miscompile, so where two versions read a source differently, the scan follows
//! the reading in which the source compiles, and every rule errs towards "not identical".
//!
//! - `assert` is a hard keyword, so any `assert` name token outside strings and comments counts.
//! - `__debug__` anywhere in the bytes counts, even in strings and comments. So does any run of
//!   identifier characters whose NFKC form contains `__debug__` (or is `assert`): CPython
//!   normalizes non-ASCII identifiers, so `__ｄebug__` (fullwidth d) *is* `__debug__`.
//! - Any string literal that starts a statement (at the start of a logical line, or after a
//!   `:` or `;` outside brackets, parentheses included: `("doc")` is one) counts as a possible
//!   docstring, whatever its prefix.
//! - Lines end at `\n`, `\r\n` and a lone `\r` (CPython translates all three), in code and in
//!   comments alike.
//! - F-strings are read as 3.12 reads them (PEP 701: replacement fields hold any expression,
//!   quotes included, and format specs hold further fields). A source that an older version
//!   reads differently has an unclosed replacement field there, which is a syntax error on
//!   that version, so only the 3.12 reading can compile. What only 3.12+ allows inside a
//!   field (comments, backslashes, line breaks in a single-quoted f-string) counts as unsure,
//!   as do f-strings nested more than [`MAX_NESTING`] deep. `t` prefixes (3.14) read like `f`.
//! - Bytes the tokenizer does not follow (an unterminated string, a stray character, a NUL)
//!   count as "unsure", as does a source that is not UTF-8 or whose first two lines name an
//!   encoding other than UTF-8 (PEP 263).

use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// Which adjacent levels are certainly identical.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdenticalLevels(u8);

impl IdenticalLevels {
    /// Level 1 is certainly identical to level 0.
    pub const LEVEL1_IS_LEVEL0: u8 = 0b01;
    /// Level 2 is certainly identical to level 1.
    pub const LEVEL2_IS_LEVEL1: u8 = 0b10;

    pub fn nothing() -> IdenticalLevels {
        IdenticalLevels(0)
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn level1_is_level0(self) -> bool {
        self.0 & Self::LEVEL1_IS_LEVEL0 != 0
    }

    pub fn level2_is_level1(self) -> bool {
        self.0 & Self::LEVEL2_IS_LEVEL1 != 0
    }
}

/// What the text of a source tells before it is compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prediction {
    pub same: IdenticalLevels,
    /// The source may have a non-ASCII name (identifier, attribute, keyword). Compiling it may
    /// intern a latin-1 one-character string for the rest of the process (names are
    /// NFKC-normalized, so not only latin-1 spellings), so the worker compiles later sources with
    /// such a constant afresh (see worker.py).
    pub non_ascii_names: bool,
}

/// Predict from the source bytes.
pub fn predict(source: &[u8]) -> Prediction {
    match scan(source) {
        Some(found) => {
            let mut bits = 0;
            if !found.assert_or_debug {
                bits |= IdenticalLevels::LEVEL1_IS_LEVEL0;
            }
            if !found.docstring {
                bits |= IdenticalLevels::LEVEL2_IS_LEVEL1;
            }
            Prediction {
                same: IdenticalLevels(bits),
                non_ascii_names: found.non_ascii_name,
            }
        }
        None => Prediction {
            same: IdenticalLevels::nothing(),
            non_ascii_names: !source.is_ascii(),
        },
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    assert_or_debug: bool,
    docstring: bool,
    non_ascii_name: bool,
}

/// How deep f-strings and replacement fields may nest before the scan gives up (3.12 allows
/// f-strings 150 deep; real code nests two or three). Bounds the recursion on any input.
const MAX_NESTING: u32 = 32;

/// Tokenize just enough to find `assert` tokens and statement-starting strings; `None` when
/// unsure.
fn scan(src: &[u8]) -> Option<Found> {
    let src = src.strip_prefix(b"\xef\xbb\xbf").unwrap_or(src);
    // CPython refuses a NUL anywhere in the source (even in a comment).
    if memchr::memchr(0, src).is_some() {
        return None;
    }
    // A non-UTF-8 source (or one declaring another encoding) is decoded by CPython in ways this
    // scan does not follow; leave such files alone.
    std::str::from_utf8(src).ok()?;
    if !encoding_is_utf8(src) {
        return None;
    }
    let mut scanner = Scanner {
        src,
        nesting: 0,
        found: Found {
            assert_or_debug: contains(src, b"__debug__") || has_compatibility_spelling(src),
            ..Found::default()
        },
    };
    scanner.module()?;
    Some(scanner.found)
}

/// Bytes that continue a name as CPython's tokenizer reads it: ASCII letters, digits, `_`,
/// and every non-ASCII byte (the tokenizer checks validity after the fact).
const NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
        c += 1;
    }
    t
};

/// Is some run of name characters, once NFKC-normalized as CPython normalizes identifiers, a
/// spelling of `__debug__` (or of `assert`, which CPython then reads as a name, never as the
/// keyword: counted anyway, it costs nothing)? Every run in the file counts, inside strings
/// and comments too, so the answer does not depend on the tokenizer below.
fn has_compatibility_spelling(src: &[u8]) -> bool {
    if src.is_ascii() {
        return false;
    }
    let mut i = 0;
    while let Some(n) = src[i..].iter().position(|&c| c >= 0x80) {
        let at = i + n;
        let start = src[i..at]
            .iter()
            .rposition(|&c| !NAME[c as usize])
            .map_or(i, |p| i + p + 1);
        let end = src[at..]
            .iter()
            .position(|&c| !NAME[c as usize])
            .map_or(src.len(), |p| at + p);
        // Runs start and end at ASCII bytes or the ends of valid UTF-8: valid UTF-8 too.
        let Ok(run) = std::str::from_utf8(&src[start..end]) else {
            return true;
        };
        if is_nfkc_quick(run.chars()) != IsNormalized::Yes {
            let normal: String = run.nfkc().collect();
            if normal.contains("__debug__") || normal == "assert" {
                return true;
            }
        }
        i = end;
    }
    false
}

/// What a token turned out to be, as far as statements care.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    String,
    Other,
}

/// Where a replacement field's expression stopped.
enum FieldEnd {
    /// At the `}` that closes the field.
    Close,
    /// At the `:` that starts its format spec.
    Spec,
}

/// The delimiter of a string literal.
#[derive(Clone, Copy)]
struct Quote {
    char: u8,
    triple: bool,
}

/// Single-byte operators (and `.` and `:`, which are handled apart where they matter).
const OPERATOR: [bool; 256] = {
    let mut t = [false; 256];
    let ops = b"+-*/%@&|^~<>=!,.:";
    let mut k = 0;
    while k < ops.len() {
        t[ops[k] as usize] = true;
        k += 1;
    }
    t
};

/// The scan's state; positions are passed around and returned (`None`: unsure).
struct Scanner<'a> {
    src: &'a [u8],
    /// F-strings and replacement fields open around the current position.
    nesting: u32,
    found: Found,
}

impl Scanner<'_> {
    /// The statements of the module, to the end of the source.
    fn module(&mut self) -> Option<()> {
        let src = self.src;
        let mut i = 0;
        let mut depth: usize = 0;
        // True where a string literal would start a statement.
        let mut statement_start = true;
        while i < src.len() {
            match src[i] {
                b' ' | b'\t' | b'\x0c' => {
                    i += 1;
                    // Indentation comes in runs.
                    while i < src.len() && src[i] == b' ' {
                        i += 1;
                    }
                }
                b'\n' | b'\r' => {
                    if depth == 0 {
                        statement_start = true;
                    }
                    i += 1;
                }
                b'#' => i = comment_end(src, i),
                b'\\' => i = continuation_end(src, i)?,
                b'(' => {
                    // `("doc")` is still a docstring: a statement-starting paren keeps the flag.
                    depth += 1;
                    i += 1;
                }
                b'[' | b'{' => {
                    depth += 1;
                    statement_start = false;
                    i += 1;
                }
                b')' | b']' | b'}' => {
                    depth = depth.checked_sub(1)?;
                    statement_start = false;
                    i += 1;
                }
                b':' | b';' => {
                    // `def f(): "doc"` and `x = 1; "doc"`: a string can start a statement here.
                    // (`:=`, lambdas and annotations make this conservative, never wrong.)
                    statement_start = depth == 0;
                    i += 1;
                }
                _ => {
                    let (end, token) = self.token(i)?;
                    if token == Token::String && statement_start {
                        self.found.docstring = true;
                    }
                    statement_start = false;
                    i = end;
                }
            }
        }
        (depth == 0).then_some(())
    }

    /// One token at `i` that is neither whitespace nor a bracket: a name, string, number or
    /// operator. Returns where it ends.
    #[inline(always)]
    fn token(&mut self, i: usize) -> Option<(usize, Token)> {
        let src = self.src;
        let c = src[i];
        if NAME[c as usize] && !c.is_ascii_digit() {
            let (mut end, mut high) = (i + 1, c);
            while end < src.len() && NAME[src[end] as usize] {
                high |= src[end];
                end += 1;
            }
            let word = &src[i..end];
            if matches!(src.get(end), Some(b'"' | b'\'')) {
                if let Some((formatted, raw)) = string_prefix(word) {
                    return Some((self.string(end, formatted, raw)?, Token::String));
                }
            }
            if high >= 0x80 {
                self.found.non_ascii_name = true;
            }
            if word == b"assert" {
                self.found.assert_or_debug = true;
            }
            return Some((end, Token::Other));
        }
        if c == b'"' || c == b'\'' {
            return Some((self.string(i, false, false)?, Token::String));
        }
        if c.is_ascii_digit() || c == b'.' && src.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return Some((number_end(src, i), Token::Other));
        }
        if OPERATOR[c as usize] {
            return Some((i + 1, Token::Other));
        }
        // Anything else ($, ?, backtick, control characters): not something to vouch for.
        None
    }

    /// The string literal whose opening quote is at `i`; returns where it ends. Escapes are
    /// skipped in every kind of string (a raw string's `\"` does not end it either).
    fn string(&mut self, i: usize, formatted: bool, raw: bool) -> Option<usize> {
        let src = self.src;
        let char = src[i];
        let triple = src.get(i + 1) == Some(&char) && src.get(i + 2) == Some(&char);
        let mut i = i + if triple { 3 } else { 1 };
        if formatted {
            self.nest()?;
            let end = self.fstring_text(i, Quote { char, triple }, raw, false)?;
            self.nesting -= 1;
            return Some(end);
        }
        loop {
            // Jump to the next byte that can matter.
            let n = if triple {
                memchr::memchr2(b'\\', char, &src[i..])?
            } else {
                let n = memchr::memchr3(b'\\', char, b'\n', &src[i..])?;
                // A lone `\r` is a line end too: the string is unterminated.
                if memchr::memchr(b'\r', &src[i..i + n]).is_some() {
                    return None;
                }
                n
            };
            i += n;
            match src[i] {
                b'\\' => i = escape_end(src, i)?,
                b'\n' => return None,
                _ if !triple => return Some(i + 1),
                _ if src.get(i + 1) == Some(&char) && src.get(i + 2) == Some(&char) => {
                    return Some(i + 3)
                }
                _ => i += 1,
            }
        }
    }

    fn nest(&mut self) -> Option<()> {
        self.nesting += 1;
        (self.nesting <= MAX_NESTING).then_some(())
    }

    /// The literal text of an f-string from `i` (after its opening quote), with its replacement
    /// fields, through its closing quote; or, `in_spec`, the text of a format spec up to the
    /// `}` that closes its field. Returns the position after the quote, or of the `}`.
    fn fstring_text(
        &mut self,
        mut i: usize,
        quote: Quote,
        raw: bool,
        in_spec: bool,
    ) -> Option<usize> {
        let src = self.src;
        loop {
            let c = *src.get(i)?;
            match c {
                b'\\' => match *src.get(i + 1)? {
                    // 3.12 reads the brace on its own, as a field or `{{`; so did 3.6-3.11.
                    b'{' | b'}' => i += 1,
                    b'N' if !raw && src.get(i + 2) == Some(&b'{') => {
                        // `\N{NAME}`: the braces belong to the escape.
                        i += 3;
                        let n = src[i..].iter().position(|&c| {
                            !(c.is_ascii_alphanumeric() || c == b' ' || c == b'-')
                        })?;
                        if src[i + n] != b'}' {
                            return None;
                        }
                        i += n + 1;
                    }
                    _ => i = escape_end(src, i)?,
                },
                b'\n' | b'\r' => {
                    if !quote.triple {
                        // The end of the line ends a single-quoted string (3.12 allows one
                        // in a format spec; not followed).
                        return None;
                    }
                    i += 1;
                }
                b'{' => {
                    if !in_spec && src.get(i + 1) == Some(&b'{') {
                        i += 2;
                    } else {
                        i = self.replacement_field(i + 1, quote, raw)?;
                    }
                }
                b'}' => {
                    if in_spec {
                        return Some(i);
                    }
                    if src.get(i + 1) != Some(&b'}') {
                        return None;
                    }
                    i += 2;
                }
                _ if c == quote.char => {
                    if quote.triple && (src.get(i + 1) != Some(&c) || src.get(i + 2) != Some(&c)) {
                        i += 1;
                        continue;
                    }
                    if in_spec {
                        // The string ends inside a replacement field: a syntax error.
                        return None;
                    }
                    return Some(i + if quote.triple { 3 } else { 1 });
                }
                _ => i += 1,
            }
        }
    }

    /// A replacement field from `i` (after its `{`); returns the position after its `}`.
    fn replacement_field(&mut self, i: usize, quote: Quote, raw: bool) -> Option<usize> {
        self.nest()?;
        let mut i = match self.field_expression(i, quote)? {
            (i, FieldEnd::Spec) => self.fstring_text(i + 1, quote, raw, true)?,
            (i, FieldEnd::Close) => i,
        };
        // At the closing `}`.
        i += 1;
        self.nesting -= 1;
        Some(i)
    }

    /// The expression of a replacement field (conversion and `=` included), up to the `:` of
    /// its format spec or its closing `}`. Only a docstring or `assert` matters, and neither
    /// can be in an expression, so this only has to find where the field ends.
    fn field_expression(&mut self, mut i: usize, quote: Quote) -> Option<(usize, FieldEnd)> {
        let src = self.src;
        let mut depth: usize = 0;
        loop {
            match *src.get(i)? {
                b' ' | b'\t' | b'\x0c' => i += 1,
                b'\n' | b'\r' if quote.triple => i += 1,
                // Only 3.12+ allows these in a field (and only 3.12+ reads a single-quoted
                // f-string past a line end): not followed.
                b'\n' | b'\r' | b'#' | b'\\' => return None,
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    i += 1;
                }
                b')' | b']' => {
                    depth = depth.checked_sub(1)?;
                    i += 1;
                }
                b'}' if depth == 0 => return Some((i, FieldEnd::Close)),
                b'}' => {
                    depth -= 1;
                    i += 1;
                }
                b':' if depth == 0 => return Some((i, FieldEnd::Spec)),
                _ => i = self.token(i)?.0,
            }
        }
    }
}

/// The end of the comment at `i`: the next line end (any of CPython's three).
fn comment_end(src: &[u8], i: usize) -> usize {
    memchr::memchr2(b'\n', b'\r', &src[i..]).map_or(src.len(), |n| i + n)
}

/// After the backslash at `i` that continues the logical line onto the next one.
fn continuation_end(src: &[u8], i: usize) -> Option<usize> {
    match (*src.get(i + 1)?, src.get(i + 2)) {
        (b'\r', Some(b'\n')) => Some(i + 3),
        (b'\n' | b'\r', _) => Some(i + 2),
        _ => None,
    }
}

/// After the backslash at `i` and the character it escapes (a `\r\n` line end as one).
fn escape_end(src: &[u8], i: usize) -> Option<usize> {
    match (*src.get(i + 1)?, src.get(i + 2)) {
        (b'\r', Some(b'\n')) => Some(i + 3),
        _ => Some(i + 2),
    }
}

/// The end of the number at `i`, as CPython's tokenizer ends it, so that a name glued to it
/// (`1if x else 2`) is read as the name it is.
fn number_end(src: &[u8], mut i: usize) -> usize {
    let digits = |i: &mut usize, hex: bool| {
        let digit = |c: u8| c.is_ascii_digit() || hex && c.is_ascii_hexdigit();
        while *i < src.len() {
            if digit(src[*i]) {
                *i += 1;
            } else if src[*i] == b'_' && src.get(*i + 1).is_some_and(|&c| digit(c)) {
                *i += 2;
            } else {
                break;
            }
        }
    };
    if src[i] == b'0'
        && matches!(
            src.get(i + 1),
            Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
        )
    {
        let hex = matches!(src[i + 1], b'x' | b'X');
        i += 2;
        if src.get(i) == Some(&b'_') {
            i += 1;
        }
        digits(&mut i, hex);
        return i;
    }
    digits(&mut i, false);
    if src.get(i) == Some(&b'.') {
        i += 1;
        digits(&mut i, false);
    }
    if matches!(src.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(src.get(i + 1), Some(b'+' | b'-')));
        if src.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
            i += 1 + sign;
            digits(&mut i, false);
        }
    }
    if matches!(src.get(i), Some(b'j' | b'J')) {
        i += 1;
    }
    i
}

/// A string prefix (`r`, `b`, `f`, `u`, `t` and pairs of them, any case) as (formatted, raw).
/// Combinations CPython rejects (`ub`, `ff`...) are a syntax error whichever way they are read.
fn string_prefix(word: &[u8]) -> Option<(bool, bool)> {
    if word.len() > 2 {
        return None;
    }
    let (mut formatted, mut raw) = (false, false);
    for c in word {
        match c.to_ascii_lowercase() {
            b'f' | b't' => formatted = true,
            b'r' => raw = true,
            b'b' | b'u' => {}
            _ => return None,
        }
    }
    Some((formatted, raw))
}

/// PEP 263: CPython decodes the source with the encoding named by `coding[:=]NAME` in a comment
/// on one of its first two lines. Only UTF-8 leaves the bytes as this scan reads them. Lines are
/// taken generously (to the second `\n`, though CPython also ends them at `\r`), comment or
/// not: any other encoding named there makes the scan unsure.
fn encoding_is_utf8(src: &[u8]) -> bool {
    let head = match memchr::memchr(b'\n', src) {
        Some(first) => {
            memchr::memchr(b'\n', &src[first + 1..]).map_or(src.len(), |n| first + 1 + n)
        }
        None => src.len(),
    };
    let head = &src[..head];
    memchr::memmem::find_iter(head, b"coding").all(|at| {
        let rest = &head[at + 6..];
        let Some((b':' | b'=', rest)) = rest.split_first() else {
            return true;
        };
        let rest = &rest[rest
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count()..];
        let name: Vec<u8> = rest
            .iter()
            .take_while(|&&c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
            .map(|c| {
                if *c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        // CPython's own spellings of UTF-8 (get_normal_name), and the codec alias `utf8`.
        name.is_empty() || name == b"utf-8" || name.starts_with(b"utf-8-") || name == b"utf8"
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> (bool, bool) {
        let s = predict(src.as_bytes()).same;
        (s.level1_is_level0(), s.level2_is_level1())
    }

    #[test]
    fn non_ascii_names_are_flagged() {
        assert!(predict("\u{e4} = 1\n".as_bytes()).non_ascii_names);
        assert!(
            predict("x.\u{212b}\n".as_bytes()).non_ascii_names,
            "NFKC makes it latin-1"
        );
        assert!(!predict("x = '\u{e4}'  # J\u{fc}rgen\n".as_bytes()).non_ascii_names);
        assert!(!predict(b"x = 1\n").non_ascii_names);
        // Unsure scans flag any non-ASCII byte.
        assert!(predict(b"x = '\xe4'\n").non_ascii_names);
        assert!(!predict(b"x = (\n").non_ascii_names);
    }

    #[test]
    fn the_four_cpython_cases() {
        assert_eq!(p("x = 1\n"), (true, true));
        assert_eq!(p("assert x\n"), (false, true));
        assert_eq!(p("\"\"\"doc\"\"\"\nx = 1\n"), (true, false));
        assert_eq!(p("\"\"\"doc\"\"\"\nassert x\n"), (false, false));
    }

    #[test]
    fn docstrings_where_cpython_has_them() {
        assert_eq!(p("def f():\n    'doc'\n    return 1\n"), (true, false));
        assert_eq!(p("class A:\n    r'''doc'''\n"), (true, false));
        assert_eq!(p("async def f(): \"doc\"\n"), (true, false));
        assert_eq!(
            p("def f(): return 1; 'x'\n"),
            (true, false),
            "conservative after ';'"
        );
        assert_eq!(p("# comment\n\n'''module doc'''\n"), (true, false));
        // A parenthesized string is the same Expr(Constant): a docstring.
        assert_eq!(p("('doc')\n"), (true, false));
        assert_eq!(p("def f():\n    ((\n      'a' 'b'))\n"), (true, false));
        // Not statement-starting: a call argument, an assignment value, a dict value.
        assert_eq!(
            p("x = 'a'\nf('b')\nd = {1: 'c'}\ny = (\n  'd'\n)\n"),
            (true, true)
        );
    }

    #[test]
    fn asserts_and_debug() {
        assert_eq!(p("if __debug__:\n    pass\n"), (false, true));
        assert_eq!(p("x = f'{__debug__}'\n"), (false, true));
        assert_eq!(p("x = 'assert'  # assert in text only\n"), (true, true));
        assert_eq!(p("self.assertEqual(a, b)\n"), (true, true));
        assert_eq!(p("def f():\n    assert x, 'msg'\n"), (false, true));
    }

    #[test]
    fn unsure_means_every_level() {
        assert_eq!(
            predict(b"x = '\xe9'\n").same,
            IdenticalLevels::nothing(),
            "not UTF-8"
        );
        assert_eq!(
            predict(b"# -*- coding: latin-1 -*-\nx = 1\n").same,
            IdenticalLevels::nothing()
        );
        assert_eq!(
            predict(b"x = 'unterminated\n").same,
            IdenticalLevels::nothing()
        );
        assert_eq!(predict(b"x = (1\n").same, IdenticalLevels::nothing());
        assert_eq!(predict(b"x = $\n").same, IdenticalLevels::nothing());
        assert_eq!(predict(b"x = 1 \\ y\n").same, IdenticalLevels::nothing());
    }

    #[test]
    fn strings_hide_everything_inside() {
        assert_eq!(p("x = '''\nassert 1\n\"\"\"doc\"\"\"\n'''\n"), (true, true));
        assert_eq!(p("x = \"a\\\"assert\"\n"), (true, true));
        assert_eq!(p("x = rb'\\\\'\nassert y\n"), (false, true));
        assert_eq!(p("x = f\"{d['k']}\"\n"), (true, true));
        assert_eq!(p("x = 1 + \\\n  2\n'late doc?'\n"), (true, false));
    }

    fn unsure(src: &[u8]) -> bool {
        predict(src).same == IdenticalLevels::nothing()
    }

    /// Issue 12: CPython NFKC-normalizes identifiers, so these are all `__debug__`.
    #[test]
    fn compatibility_spellings_of_debug() {
        for src in [
            "DEBUG = __\u{ff44}ebug__\n",          // fullwidth d
            "DEBUG = _\u{ff3f}debug__\n",          // fullwidth low line (not first: not XID_Start)
            "DEBUG = __debug_\u{fe4d}\n",          // dashed low line
            "DEBUG = __\u{1d41d}ebug__\n",         // mathematical bold d
            "DEBUG = __\u{1d5bd}\u{1d5be}bug__\n", // mathematical sans-serif d, e
            "DEBUG = __\u{1d48}ebug__\n",          // modifier letter small d
            "x = f'{__\u{ff44}ebug__}'\n",         // in a replacement field
            "x = f'{1:{__\u{ff44}ebug__}}'\n",     // in a format spec's field
            "x = f\"{f'{__\u{ff44}ebug__!r}'}\"\n",
            "f = lambda: __\u{ff44}ebug__\n",
            "y = [__\u{ff44}ebug__ for _ in ()]\n",
            "match x:\n    case 1 if __\u{ff44}ebug__:\n        pass\n",
            "x = y.__\u{ff44}ebug__\n", // an attribute is not folded: counted anyway
            "x = '__\u{ff44}ebug__'\n", // in a string: counted anyway
        ] {
            assert!(!p(src).0, "{src:?}");
        }
        // `ａssert` is a name to CPython, never the keyword; counted anyway.
        assert!(!p("\u{ff41}ssert = 1\n").0);
        // Not a spelling of `__debug__`: still identical.
        assert_eq!(p("__\u{ff44}ebug = 1\n\u{e4}ebug__ = 2\n"), (true, true));
        assert_eq!(p("DEBUG = __DEBUG__\n"), (true, true));
        assert_eq!(
            p("x = '\u{ff44}\u{ff45}\u{ff42}\u{ff55}\u{ff47}'\n"),
            (true, true)
        );
    }

    /// CPython translates `\r\n` and a lone `\r` to `\n` before it tokenizes.
    #[test]
    fn every_line_end() {
        // A comment ends at a lone `\r`: the assert is code.
        assert!(!p("x = 1  # c\rassert x\n").0);
        assert!(!p("x = 1  # c\r\nassert x\r\n").0);
        assert_eq!(p("def f():\r    'doc'\r"), (true, false));
        assert_eq!(p("def f():\r\n    'doc'\r\n"), (true, false));
        assert_eq!(p("x = 1 + \\\r  2\r'doc?'\r"), (true, false));
        assert_eq!(p("x = 1 + \\\r\n  2\r\n"), (true, true));
        // A single-quoted string cannot span a lone `\r`; an escaped line end continues it.
        assert!(unsure(b"x = 'a\rb'\n"));
        assert_eq!(p("x = 'a\\\rb'\nassert y\n"), (false, true));
        assert_eq!(p("x = 'a\\\r\nb'\r\n"), (true, true));
        assert_eq!(p("x = '''a\rassert b'''\r"), (true, true));
    }

    /// PEP 701 (3.12+): a replacement field may hold any string, even in the same quotes.
    /// Read as one string per quote pair, the rest of the source is misread.
    #[test]
    fn pep701_fstrings() {
        assert!(!p("x = f\"{\"'''\"}\"\nassert x\n# '''\n").0);
        assert!(!p("x = f\"{\"'''\"}\"\ndef f():\n    \"doc\"\n# '''\n").1);
        assert_eq!(p("x = f\"{d[\"k\"]}\"\n"), (true, true));
        assert_eq!(p("x = f\"{f\"{f\"{1}\"}\"}\"\n"), (true, true));
        assert_eq!(p("x = f'''{\n  y\n}'''\nassert z\n"), (false, true));
        // A backslash in a string in a field (3.12+) belongs to the nested string.
        assert_eq!(p("x = f'{\"\\n\".join(y)}'\n"), (true, true));
        // Only 3.12+ allows these inside a field: unsure.
        assert!(unsure(b"x = f'''{1 + \\\n 2}'''\n"));
        assert!(unsure(b"x = f'''{y # it's\n}'''\n"));
        assert!(unsure(b"x = f'{1 +\n 2}'\n"));
        assert!(unsure(b"x = f'{1:\n}'\n"));
    }

    #[test]
    fn fstring_fields_and_specs() {
        assert_eq!(p("x = f'{{assert}} {y}'\n"), (true, true));
        assert_eq!(
            p("x = f'{y!r:>{w}.{p}}' f\"{y=}\" F'{y:#x}'\n"),
            (true, true)
        );
        assert_eq!(p("x = f\"{y:'^10}\"\nassert z\n"), (false, true));
        assert_eq!(
            p("x = f'{(lambda: 1)()}' f'{a!=b}' f'{ {1: 2}[1] }'\n"),
            (true, true)
        );
        assert_eq!(p("x = f'{y:{{}}}'\n"), (true, true));
        assert_eq!(p("x = f'\\N{BULLET} {y}' rf'\\N{y}'\n"), (true, true));
        assert_eq!(p("x = f'\\{6}' f'\\''\nassert y\n"), (false, true));
        assert_eq!(p("x = t'{y}'\n"), (true, true));
        assert!(unsure(b"x = f'{y'\n"));
        assert!(unsure(b"x = f'}'\n"));
        assert!(unsure(b"x = f'{y:'\n"));
        assert!(unsure(b"x = f'\\N{BULLET'\n"));
        // A field's `:` starts the spec; a deeper one does not.
        assert_eq!(p("x = f'{d[1:2]}'\n'doc?'\n"), (true, false));
    }

    #[test]
    fn fstrings_nested_too_deep_are_unsure() {
        let deep = |n: usize| format!("x = {}1{}\n", "f'{".repeat(n), "}'".repeat(n));
        assert_eq!(p(&deep(3)), (true, true));
        assert!(unsure(deep(100).as_bytes()));
        let specs = |n: usize| format!("x = f'{}{}'\n", "{1:".repeat(n), "}".repeat(n));
        assert_eq!(p(&specs(3)), (true, true));
        assert!(unsure(specs(100).as_bytes()));
    }

    #[test]
    fn string_prefixes_in_every_case() {
        for prefix in [
            "", "r", "u", "R", "U", "f", "F", "b", "B", "br", "Br", "bR", "BR", "rb", "rB", "Rb",
            "RB", "fr", "Fr", "fR", "FR", "rf", "rF", "Rf", "RF", "t", "T", "tr", "Rt",
        ] {
            for q in ["'", "\"", "'''", "\"\"\""] {
                let doc = format!("def f():\n    {prefix}{q}doc \\{q} # {q}\n");
                assert_eq!(p(&doc), (true, false), "{doc}");
                let hidden = format!("x = {prefix}{q}\\{q}assert x{q}\n");
                assert_eq!(p(&hidden), (true, true), "{hidden}");
            }
        }
        // Not a prefix: a name, then a string.
        assert_eq!(p("x = xr'a'\n"), (true, true));
    }

    #[test]
    fn statements_in_every_shape() {
        assert_eq!(p("class A: 'doc'\n"), (true, false));
        assert_eq!(p("def f(): 'doc'; return 1\n"), (true, false));
        assert_eq!(p("@dec\ndef f():\n\t'doc'\n"), (true, false));
        assert_eq!(p("@dec(':')\nclass A:\n  x = 1\n"), (true, true));
        assert_eq!(
            p("def f():\n    ((\n      'a'\n      'b'))\n"),
            (true, false)
        );
        assert_eq!(p("'a' \\\n  'b'\n"), (true, false));
        assert_eq!(p("\x0cdef f():\n\x0c    'doc'\n"), (true, false));
        assert_eq!(p("def f(): ...\nx = ...\n"), (true, true));
        assert_eq!(
            p("f = lambda: 'x'\n"),
            (true, false),
            "conservative after ':'"
        );
        assert_eq!(p("match x:\n    case 1 if y: assert y\n"), (false, true));
        assert_eq!(p("if x: pass\nelse: assert y\n"), (false, true));
        assert_eq!(p("x = 1;assert y\n"), (false, true));
    }

    #[test]
    fn numbers_glued_to_names() {
        assert_eq!(p("x = 1if y else 2\n"), (true, true));
        assert_eq!(p("x = [0x1for y in z]\n"), (true, true));
        assert_eq!(
            p("x = 1.e5 + .5j + 1_000 + 0b1_0 + 0o7 + 1E-3\n"),
            (true, true)
        );
        assert_eq!(p("x = 1 .real\n"), (true, true));
        // `1.` ends a float: what follows is a name (a syntax error, but read as one).
        assert!(!p("x = 1.assert\n").0);
        assert!(!p("x = 0x1;assert y\n").0);
    }

    #[test]
    fn encodings() {
        for cookie in ["utf-8", "UTF-8", "utf_8", "utf8", "utf-8-sig"] {
            let src = format!("# -*- coding: {cookie} -*-\nx = '\u{e4}'\n");
            assert_eq!(p(&src), (true, true), "{src}");
        }
        for src in [
            &b"# -*- coding: latin-1 -*-\nx = 1\n"[..],
            b"#!/usr/bin/python\n# vim: set fileencoding=cp1252 :\nx = 1\n",
            b"\x0c# coding: utf-7\nx = 1\n",
            b"x = 1\r# coding: utf-7\ry = +AF8AXw-debug+AF8AXw-\r",
            b"\xef\xbb\xbf# coding: koi8-r\nx = 1\n",
            b"x = '\x00'\n",
            b"x = 1  # \x00\n",
        ] {
            assert!(unsure(src), "{}", String::from_utf8_lossy(src));
        }
        assert_eq!(p("\u{feff}'''doc'''\n"), (true, false));
        assert_eq!(p("\u{feff}x = 1\n"), (true, true));
        // A third line names no encoding.
        assert_eq!(p("\n\n# coding: latin-1\nx = 1\n"), (true, true));
    }

    #[test]
    fn non_ascii_names_in_fields_are_flagged() {
        assert!(predict("x = f'{\u{e4}}'\n".as_bytes()).non_ascii_names);
        assert!(predict("x = f'{y:{\u{e4}}}'\n".as_bytes()).non_ascii_names);
        assert!(!predict("x = f'\u{e4}{y}'\n".as_bytes()).non_ascii_names);
    }
}
