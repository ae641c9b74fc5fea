//! Random, mostly valid Python programs for differential testing of level prediction.
//!
//! Each program is drawn from one seed. It is biased towards what makes levels differ
//! (`assert`, `__debug__` in every spelling and place, docstrings in every form) and towards
//! where a scanner loses track: line continuations, `;`, every line end (`\n`, `\r\n`, `\r`),
//! form feeds, f-strings with conversions, `=` and nested format specs (PEP 701 nesting for
//! 3.12), nested blocks, one-line bodies, `match` guards, decorators, lambdas and
//! comprehensions, non-ASCII names, strings with escapes, every prefix and quote, comments
//! with quotes, BOMs and coding cookies. Per program it also draws how often each of those
//! appears, so that many programs have none of them (the scan then predicts identical levels,
//! which is what must never be wrong) and many have them in odd places.
//!
//! A program targets one syntax level (3.6, 3.8, 3.10 or 3.12); older interpreters reject
//! newer syntax, which the check counts as skipped.

/// splitmix64: small, fast, and good enough to draw programs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with `percent` % probability.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The program drawn from `seed`.
pub fn program(seed: u64) -> Vec<u8> {
    let mut g = Gen::new(seed);
    g.module();
    g.finish()
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Syntax {
    Py36,
    Py38,
    Py310,
    Py312,
}

#[derive(Clone, Copy, Default)]
struct Ctx {
    function: bool,
    generator_ok: bool,
    is_async: bool,
    in_loop: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Quote {
    char: char,
    triple: bool,
}

impl Quote {
    fn text(self) -> String {
        let n = if self.triple { 3 } else { 1 };
        std::iter::repeat(self.char).take(n).collect()
    }
}

struct Gen {
    rng: Rng,
    syntax: Syntax,
    out: String,
    unit: &'static str,
    /// Percent rates, drawn per program.
    rate_assert: u32,
    rate_debug: u32,
    rate_doc: u32,
    rate_hazard: u32,
    rate_non_ascii: u32,
    /// The f-strings whose replacement field is being generated, innermost last.
    fields: Vec<Quote>,
    /// Open brackets in the current expression (line breaks are allowed inside).
    brackets: u32,
    depth: u32,
    comprehensions: u32,
    names: u32,
}

const ASCII_NAMES: &[&str] = &[
    "x",
    "y",
    "z",
    "a",
    "b",
    "data",
    "value",
    "obj",
    "items",
    "n",
    "s",
    "self_",
    "result",
    // lookalikes of what matters, which do not matter
    "assert_",
    "_assert",
    "asserts",
    "debug",
    "__debug",
    "_debug__",
    "__DEBUG__",
    "debug__",
];

const NON_ASCII_NAMES: &[&str] = &[
    "\u{e4}",           // ä
    "\u{3c0}",          // π
    "\u{540d}\u{524d}", // 名前
    "\u{f1}ame",        // ñame
    "\u{2126}",         // Ω (ohm sign, NFKC: Greek omega)
    "\u{fb01}le",       // ﬁle (NFKC: file)
    "\u{210c}x",        // ℌx
    "\u{ff58}",         // fullwidth x (NFKC: x)
    "__\u{ff44}ebug",   // almost __debug__
    "\u{ff41}ssert",    // ａssert: a name to CPython (NFKC: assert)
    "x\u{b7}y",         // middle dot continues a name
    "\u{1d41d}ata",     // mathematical bold d (NFKC: data)
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "42",
    "3.14",
    "1e5",
    "1E-3",
    "0x1f",
    "0o17",
    "0b101",
    "1_000",
    "1j",
    "2.5j",
    ".5",
    "5.",
    "0xdead_beef",
    "1.e5",
    "0b1_0",
    "00",
];

const COMMENTS: &[&str] = &[
    "# it's",
    "# \"quoted",
    "# '''",
    "# \"\"\" assert x",
    "# f\"{x}\"",
    "# \\",
    "# a: b; c",
    "# coding: latin-1",
    "# \u{ff44}ebug",
    "# assert x",
    "# TODO ( [ {",
    "# 'doc'",
];

const DECORATORS: &[&str] = &[
    "@staticmethod",
    "@functools.wraps(f)",
    "@dec",
    "@dec(1, k='x')",
    "@a.b.c",
    "@dec(\"assert\")",
];

impl Gen {
    fn new(seed: u64) -> Gen {
        let mut rng = Rng::new(seed);
        let syntax = *rng.pick(&[
            Syntax::Py36,
            Syntax::Py36,
            Syntax::Py36,
            Syntax::Py36,
            Syntax::Py38,
            Syntax::Py38,
            Syntax::Py310,
            Syntax::Py310,
            Syntax::Py312,
            Syntax::Py312,
        ]);
        let unit = *rng.pick(&["    ", "    ", "  ", "\t", " "]);
        // Many programs have none of what makes levels differ; the others have it sparse
        // or dense.
        let rate = |rng: &mut Rng| *rng.pick(&[0, 0, 0, 2, 5, 15]);
        let rate_assert = rate(&mut rng);
        let rate_debug = rate(&mut rng);
        let rate_doc = rate(&mut rng);
        let rate_hazard = *rng.pick(&[0, 3, 10]);
        let rate_non_ascii = *rng.pick(&[0, 0, 5, 20]);
        Gen {
            rng,
            syntax,
            out: String::new(),
            unit,
            rate_assert,
            rate_debug,
            rate_doc,
            rate_hazard,
            rate_non_ascii,
            fields: Vec::new(),
            brackets: 0,
            depth: 0,
            comprehensions: 0,
            names: 0,
        }
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.chance(percent)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        self.rng.pick(items)
    }

    // ---------------------------------------------------------------- lines and blocks

    fn line(&mut self, indent: usize, text: &str) {
        if self.chance(3) {
            self.out.push('\x0c');
        }
        for _ in 0..indent {
            self.out.push_str(self.unit);
        }
        self.out.push_str(text);
        // Nothing may follow a line continuation.
        let continued = text.ends_with('\\');
        if !continued && self.chance(8) {
            let c = *self.pick(COMMENTS);
            self.out.push_str("  ");
            self.out.push_str(c);
        }
        self.out.push('\n');
        if !continued && self.chance(6) {
            // A blank line, or a comment line at any indentation.
            if self.chance(50) {
                self.out.push('\n');
            } else {
                let c = *self.pick(COMMENTS);
                let pad = self.rng.below(9);
                self.out.push_str(&" ".repeat(pad));
                self.out.push_str(c);
                self.out.push('\n');
            }
        }
    }

    fn module(&mut self) {
        if self.chance(self.rate_doc * 3) {
            self.docstring(0);
        }
        let n = 2 + self.rng.below(9);
        for _ in 0..n {
            self.statement(0, Ctx::default());
        }
    }

    /// A body: its docstring if `doc`, then statements.
    fn block(&mut self, indent: usize, ctx: Ctx, doc: bool) {
        if doc && self.chance(self.rate_doc * 4) {
            self.docstring(indent);
            if self.chance(50) {
                return;
            }
        }
        let n = 1 + self.rng.below(3);
        for _ in 0..n {
            self.statement(indent, ctx);
        }
    }

    fn docstring(&mut self, indent: usize) {
        let s = self.plain_string(false);
        let text = match self.rng.below(8) {
            0 => format!("({s})"),
            1 => format!("(({s}))"),
            2 => format!("{s} {}", self.plain_string(false)),
            3 => {
                let pad = self.unit.repeat(indent + 1);
                format!("({s}\n{pad}{})", self.plain_string(false))
            }
            4 => {
                let pad = self.unit.repeat(indent + 1);
                format!("{s} \\\n{pad}{}", self.plain_string(false))
            }
            5 => format!("{s}; {}", self.simple(Ctx::default())),
            _ => s,
        };
        self.line(indent, &text);
    }

    fn statement(&mut self, indent: usize, ctx: Ctx) {
        let nested = indent < 4;
        match self.rng.below(100) {
            _ if self.chance(self.rate_hazard) => self.hazard(indent, ctx),
            45..=52 if nested => {
                let t = self.expr();
                self.line(indent, &format!("if {t}:"));
                self.block(indent + 1, ctx, false);
                while self.chance(30) {
                    let t = self.expr();
                    self.line(indent, &format!("elif {t}:"));
                    self.block(indent + 1, ctx, false);
                }
                if self.chance(30) {
                    self.line(indent, "else:");
                    self.block(indent + 1, ctx, false);
                }
            }
            53..=57 if nested => {
                let t = self.expr();
                self.line(indent, &format!("while {t}:"));
                self.block(
                    indent + 1,
                    Ctx {
                        in_loop: true,
                        ..ctx
                    },
                    false,
                );
                if self.chance(20) {
                    self.line(indent, "else:");
                    self.block(indent + 1, ctx, false);
                }
            }
            58..=62 if nested => {
                let target = self.target();
                let iter = self.expr();
                let kw = if ctx.is_async && self.chance(30) {
                    "async for"
                } else {
                    "for"
                };
                self.line(indent, &format!("{kw} {target} in {iter}:"));
                self.block(
                    indent + 1,
                    Ctx {
                        in_loop: true,
                        ..ctx
                    },
                    false,
                );
            }
            63..=66 if nested => {
                self.line(indent, "try:");
                self.block(indent + 1, ctx, false);
                let handler = *self.pick(&[
                    "except Exception as e:",
                    "except (ValueError, TypeError):",
                    "except:",
                ]);
                self.line(indent, handler);
                self.block(indent + 1, ctx, false);
                if self.chance(30) {
                    self.line(indent, "finally:");
                    // `continue` in `finally` is an error before 3.8.
                    self.block(
                        indent + 1,
                        Ctx {
                            in_loop: false,
                            ..ctx
                        },
                        false,
                    );
                }
            }
            67..=69 if nested => {
                let e = self.expr();
                let t = self.target();
                let kw = if ctx.is_async && self.chance(30) {
                    "async with"
                } else {
                    "with"
                };
                self.line(indent, &format!("{kw} {e} as {t}:"));
                self.block(indent + 1, ctx, false);
            }
            70..=79 if nested => self.def(indent, ctx, false),
            80..=86 if nested => self.class(indent),
            87..=91 if nested && self.syntax >= Syntax::Py310 => self.match_statement(indent, ctx),
            92..=94 if nested => self.def(indent, ctx, true),
            95..=99 => self.one_liner(indent, ctx),
            _ => self.simple_line(indent, ctx),
        }
    }

    fn simple_line(&mut self, indent: usize, ctx: Ctx) {
        let mut text = self.simple(ctx);
        while self.chance(15) {
            let sep = *self.pick(&["; ", ";", " ;  "]);
            text.push_str(sep);
            text.push_str(&self.simple(ctx));
        }
        if self.chance(5) {
            text.push(';');
        }
        self.line(indent, &text);
    }

    /// A compound statement with its body on the same line.
    fn one_liner(&mut self, indent: usize, ctx: Ctx) {
        let kind = self.rng.below(5);
        let body_ctx = match kind {
            0 => Ctx {
                function: true,
                generator_ok: true,
                ..Ctx::default()
            },
            1 => Ctx::default(),
            3 => Ctx {
                in_loop: true,
                ..ctx
            },
            _ => ctx,
        };
        let body = if self.chance(self.rate_doc * 3) {
            self.plain_string(false)
        } else {
            self.simple(body_ctx)
        };
        let text = match kind {
            0 => format!("def f{}(): {body}", self.fresh()),
            1 => format!("class C{}: {body}", self.fresh()),
            2 => format!("if {}: {body}", self.expr()),
            3 => format!("while 0: {body}"),
            _ => format!("def g{}(): return {}", self.fresh(), self.expr()),
        };
        self.line(indent, &text);
    }

    fn fresh(&mut self) -> u32 {
        self.names += 1;
        self.names
    }

    fn decorators(&mut self, indent: usize) {
        while self.chance(25) {
            let d = if self.chance(self.rate_debug * 2) {
                format!("@dec({})", self.debug_spelling())
            } else {
                self.pick(DECORATORS).to_string()
            };
            self.line(indent, &d);
        }
    }

    fn def(&mut self, indent: usize, ctx: Ctx, is_async: bool) {
        self.decorators(indent);
        let n = self.fresh();
        let params = self.params();
        let ret = if self.chance(20) {
            format!(" -> {}", self.expr())
        } else {
            String::new()
        };
        let kw = if is_async { "async def" } else { "def" };
        self.line(indent, &format!("{kw} f{n}({params}){ret}:"));
        let inner = Ctx {
            function: true,
            generator_ok: !is_async,
            is_async,
            in_loop: false,
        };
        let _ = ctx;
        self.block(indent + 1, inner, true);
    }

    fn params(&mut self) -> String {
        let mut p: Vec<String> = Vec::new();
        let n = self.rng.below(4);
        for i in 0..n {
            p.push(format!("p{i}"));
        }
        if self.syntax >= Syntax::Py38 && n > 0 && self.chance(20) {
            p.push("/".into());
        }
        if self.chance(30) {
            let d = self.expr();
            p.push(format!("d={d}"));
        }
        if self.chance(20) {
            p.push("*args".into());
            if self.chance(50) {
                p.push("k=1".into());
            }
        }
        if self.chance(15) {
            p.push("**kw".into());
        }
        p.join(", ")
    }

    fn class(&mut self, indent: usize) {
        self.decorators(indent);
        let n = self.fresh();
        let bases = match self.rng.below(3) {
            0 => String::new(),
            1 => "()".into(),
            _ => format!("({}, metaclass=M)", self.expr()),
        };
        self.line(indent, &format!("class C{n}{bases}:"));
        self.block(indent + 1, Ctx::default(), true);
    }

    fn match_statement(&mut self, indent: usize, ctx: Ctx) {
        let subject = self.expr();
        self.line(indent, &format!("match {subject}:"));
        let n = 1 + self.rng.below(3);
        for _ in 0..n {
            let pattern = (*self.pick(&[
                "1",
                "'s'",
                "None",
                "[a, b, *rest]",
                "{'k': v}",
                "Point(x=0, y=yy)",
                "str() | bytes()",
                "(1 | 2) as one",
                "-1.5",
            ]))
            .to_string();
            let guard = if self.chance(40) {
                format!(" if {}", self.expr())
            } else {
                String::new()
            };
            self.line(indent + 1, &format!("case {pattern}{guard}:"));
            self.block(indent + 2, ctx, false);
        }
        if self.chance(40) {
            self.line(indent + 1, "case _:");
            self.block(indent + 2, ctx, false);
        }
    }

    /// The places where a scanner loses track, each followed by something that matters.
    fn hazard(&mut self, indent: usize, ctx: Ctx) {
        let then = if self.chance(50) {
            format!("assert {}", self.expr())
        } else {
            self.plain_string(false)
        };
        let text = match self.rng.below(9) {
            0 if self.syntax >= Syntax::Py312 => format!("x = f\"{{\"'''\"}}\"\n{then}\n# '''"),
            1 if self.syntax >= Syntax::Py312 => {
                format!("x = f'{{'\"\"\"'}}'\n{then}\n# \"\"\"")
            }
            2 => {
                // A lone `\r` ends the comment and starts the next line.
                let pad = self.unit.repeat(indent);
                format!("x = 1  # it's\r{pad}{then}")
            }
            3 => format!("x = 'a\\'' ; {then}"),
            4 => format!("x = r'\\'' ; {then}"),
            5 => format!("x = (1,  # )\n  2)\n{then}"),
            6 => format!("x = \\\n  1; {then}"),
            7 => format!("x = f'{{y!r:{{w}}}}'; {then}"),
            _ => format!("x = 1if y else 2; {then}"),
        };
        let _ = ctx;
        for l in text.split('\n') {
            self.line(indent, l);
        }
    }

    // ---------------------------------------------------------------- simple statements

    fn simple(&mut self, ctx: Ctx) -> String {
        if self.chance(self.rate_assert * 2) {
            return if self.chance(50) {
                format!("assert {}", self.expr())
            } else {
                format!("assert {}, {}", self.expr(), self.expr())
            };
        }
        match self.rng.below(20) {
            0..=4 => format!("{} = {}", self.target(), self.expr()),
            5 => format!("{} += {}", self.target(), self.expr()),
            6 => format!("{}: {} = {}", self.name(), self.expr(), self.expr()),
            7..=8 => format!("print({})", self.args()),
            9 => "pass".into(),
            10 => "...".into(),
            11 if ctx.function => format!("return {}", self.expr()),
            12 if ctx.function && ctx.generator_ok => format!("yield {}", self.expr()),
            13 if ctx.in_loop => self.pick(&["break", "continue"]).to_string(),
            14 => self
                .pick(&["import os", "from os import path as p", "import a.b as c"])
                .to_string(),
            15 => format!("raise ValueError({})", self.expr()),
            16 if ctx.is_async => format!("await {}", self.expr()),
            17 => self.plain_string(false),
            18 => format!("del {}", self.target()),
            _ => format!("{}({})", self.name(), self.args()),
        }
    }

    fn target(&mut self) -> String {
        match self.rng.below(6) {
            0 => format!("{}.attr", self.name()),
            1 => format!("{}[{}]", self.name(), self.expr()),
            _ => self.name(),
        }
    }

    // ---------------------------------------------------------------- expressions

    fn name(&mut self) -> String {
        if self.chance(self.rate_non_ascii) {
            self.pick(NON_ASCII_NAMES).to_string()
        } else {
            self.pick(ASCII_NAMES).to_string()
        }
    }

    /// `__debug__`, often spelled with compatibility characters that NFKC maps to it.
    fn debug_spelling(&mut self) -> String {
        if self.chance(40) {
            return "__debug__".into();
        }
        let mut s = String::new();
        for (i, c) in "__debug__".chars().enumerate() {
            // The first character must be `_` or XID_Start: compatibility low lines are not
            // (a syntax error, which is fine now and then).
            let p = if i == 0 { 1 } else { 35 };
            if self.chance(p) {
                s.push(self.compatibility(c));
            } else {
                s.push(c);
            }
        }
        s
    }

    fn compatibility(&mut self, c: char) -> char {
        if c == '_' {
            return *self.pick(&[
                '\u{ff3f}', '\u{fe4d}', '\u{fe4e}', '\u{fe4f}', '\u{fe33}', '\u{fe34}',
            ]);
        }
        let off = c as u32 - 'a' as u32;
        let base = *self.pick(&[0xff41, 0x1d41a, 0x1d5ba, 0x1d68a, 0x1d622, 0x1d656]);
        let modifier = match c {
            'd' => Some('\u{1d48}'),
            'e' => Some('\u{1d49}'),
            'b' => Some('\u{1d47}'),
            'u' => Some('\u{1d58}'),
            'g' => Some('\u{1d4d}'),
            _ => None,
        };
        match modifier {
            Some(m) if self.chance(25) => m,
            _ => char::from_u32(base + off).unwrap(),
        }
    }

    fn args(&mut self) -> String {
        let mut a = Vec::new();
        for _ in 0..self.rng.below(4) {
            a.push(self.expr());
        }
        if self.chance(15) {
            a.push(format!("*{}", self.name()));
        }
        if self.chance(25) {
            a.push(format!("key={}", self.expr()));
        }
        if self.chance(10) {
            a.push(format!("**{}", self.name()));
        }
        let sep = self.separator();
        a.join(&sep)
    }

    /// `, `, or inside brackets (outside f-string fields) a line break, maybe after a comment.
    fn separator(&mut self) -> String {
        if self.brackets > 0 && self.fields.is_empty() && self.chance(15) {
            let comment = if self.chance(40) {
                format!("  {}", self.pick(COMMENTS))
            } else {
                String::new()
            };
            let pad = " ".repeat(self.rng.below(12));
            format!(",{comment}\n{pad}")
        } else {
            ", ".into()
        }
    }

    fn expr(&mut self) -> String {
        if self.depth >= 3 || self.chance(40) {
            return self.atom();
        }
        self.depth += 1;
        self.brackets += 1;
        let e = match self.rng.below(22) {
            0..=2 => {
                let op = *self.pick(&["+", "-", "*", "/", "%", "**", "//", "|", "&", "@", "<<"]);
                format!("({} {op} {})", self.expr(), self.expr())
            }
            3 => format!("(not {})", self.expr()),
            4 => format!(
                "({} {} {})",
                self.expr(),
                self.pick(&["<", "==", "!=", "is not", "in"]),
                self.expr()
            ),
            5 => format!(
                "({} {} {})",
                self.expr(),
                self.pick(&["and", "or"]),
                self.expr()
            ),
            6..=7 => format!("{}({})", self.name(), self.args()),
            8 => {
                let attr = if self.chance(self.rate_debug * 2) {
                    self.debug_spelling()
                } else {
                    self.pick(&["attr", "assert_", "__debug", "real", "__class__"])
                        .to_string()
                };
                format!("{}.{attr}", self.name())
            }
            9 => match self.rng.below(3) {
                0 => format!("{}[{}]", self.name(), self.expr()),
                1 => format!("{}[{}:{}]", self.name(), self.expr(), self.expr()),
                _ => format!("{}[::{}]", self.name(), self.expr()),
            },
            10 => {
                let params = *self.pick(&["", "q", "q, r=1", "*a, **k"]);
                format!("(lambda {params}: {})", self.expr())
            }
            11 => format!("({} if {} else {})", self.expr(), self.expr(), self.expr()),
            12 => {
                let items = self.args_plain();
                if self.chance(50) {
                    format!("[{items}]")
                } else {
                    format!("({items},)")
                }
            }
            13 => {
                // `{` right after a field's `{` would be `{{`.
                let pad = if self.fields.is_empty() { "" } else { " " };
                if self.chance(50) {
                    format!("{{{pad}{}: {}{pad}}}", self.expr(), self.expr())
                } else {
                    format!("{{{pad}{}{pad}}}", self.expr())
                }
            }
            14 => {
                let open = *self.pick(&["[", "(", "{ "]);
                let close = match open {
                    "[" => "]",
                    "(" => ")",
                    _ => " }",
                };
                self.comprehensions += 1;
                let cond = if self.chance(40) {
                    format!(" if {}", self.expr())
                } else {
                    String::new()
                };
                let e = format!(
                    "{open}{} for {} in {}{cond}{close}",
                    self.expr(),
                    self.name(),
                    self.expr()
                );
                self.comprehensions -= 1;
                e
            }
            15 if self.fields.is_empty() => {
                let pad = " ".repeat(1 + self.rng.below(8));
                format!("({}\n{pad}+ {})", self.expr(), self.expr())
            }
            // Not in a comprehension, where it is often an error.
            16 if self.syntax >= Syntax::Py38 && self.comprehensions == 0 => {
                format!("({} := {})", self.pick(&["w", "n"]), self.expr())
            }
            17 => self.fstring(),
            18 if self.fields.is_empty() => {
                self.brackets -= 1;
                let e = format!("{} + \\\n    {}", self.atom(), self.atom());
                self.brackets += 1;
                format!("({e})")
            }
            19 => format!("(1if {} else 2)", self.expr()),
            _ => self.atom(),
        };
        self.brackets -= 1;
        self.depth -= 1;
        e
    }

    fn args_plain(&mut self) -> String {
        let mut a = Vec::new();
        for _ in 0..1 + self.rng.below(3) {
            a.push(self.expr());
        }
        let sep = self.separator();
        a.join(&sep)
    }

    fn atom(&mut self) -> String {
        if self.chance(self.rate_debug) {
            return self.debug_spelling();
        }
        match self.rng.below(20) {
            0..=6 => self.name(),
            7..=9 => self.pick(NUMBERS).to_string(),
            10..=13 => self.plain_string(true),
            14..=15 => self.fstring(),
            16 => self.pick(&["...", "None", "True", "False"]).to_string(),
            17 => format!(
                "{}.{}",
                self.name(),
                self.pick(&["attr", "assert_", "__debug"])
            ),
            _ => self.name(),
        }
    }

    /// Quotes a string inside the current f-string fields may use: before 3.12 not those of
    /// an enclosing f-string.
    fn quote(&mut self) -> Option<Quote> {
        let mut chars = vec!['\'', '"'];
        if self.syntax < Syntax::Py312 {
            chars.retain(|c| self.fields.iter().all(|q| q.char != *c));
        } else if let Some(&q) = self.fields.last() {
            // PEP 701: reuse the enclosing quote often.
            if self.chance(40) {
                chars = vec![q.char];
            }
        }
        if chars.is_empty() {
            return None;
        }
        let char = *self.pick(&chars);
        Some(Quote {
            char,
            triple: self.chance(25),
        })
    }

    /// Before 3.12 an f-string field may hold no backslash and no `#`, even in a string.
    fn plain_field_text(&self) -> bool {
        !self.fields.is_empty() && self.syntax < Syntax::Py312
    }

    /// A string literal (not formatted); `bytes_ok`: may be a bytes literal.
    fn plain_string(&mut self, bytes_ok: bool) -> String {
        let Some(q) = self.quote() else {
            return self.pick(NUMBERS).to_string();
        };
        let prefixes: &[&str] = if bytes_ok {
            &[
                "", "", "", "", "", "r", "u", "R", "U", "b", "B", "rb", "rB", "Rb", "RB", "br",
                "bR", "Br", "BR",
            ]
        } else {
            &["", "", "", "", "r", "u", "R", "U"]
        };
        let prefix = *self.pick(prefixes);
        let bytes = prefix.contains(['b', 'B']);
        let raw = prefix.contains(['r', 'R']);
        let mut s = format!("{prefix}{}", q.text());
        for _ in 0..self.rng.below(5) {
            let chunk = self.chunk(q, raw, bytes, false);
            s.push_str(&chunk);
        }
        s.push_str(&q.text());
        s
    }

    /// A piece of string content that keeps the literal valid.
    fn chunk(&mut self, q: Quote, raw: bool, bytes: bool, formatted: bool) -> String {
        let other = if q.char == '"' { '\'' } else { '"' };
        let plain = self.plain_field_text();
        let c: String = match self.rng.below(16) {
            0 => self
                .pick(&[
                    "hello", " ", "x", "assert x", "doc", ": ;", "( [", "def f():",
                ])
                .to_string(),
            1 if !plain => "# not a comment".into(),
            2 if !plain || self.fields.iter().all(|f| f.char != other) => other.to_string(),
            3 if !plain => format!("\\{}", q.char),
            4 if q.triple => format!("{} ", q.char),
            5 if q.triple && self.fields.iter().all(|f| f.triple) => "\n".into(),
            6 if !plain && !raw => self
                .pick(&["\\n", "\\t", "\\\\", "\\x41", "\\0"])
                .to_string(),
            7 if !plain && !raw && !bytes => self
                .pick(&["\\u00e4", "\\N{BULLET}", "\\U0001F600"])
                .to_string(),
            8 if !plain && raw => self.pick(&["\\d", "\\\\", "\\w+"]).to_string(),
            9 if !bytes => self
                .pick(&[
                    "\u{e9}",
                    "\u{65e5}\u{672c}",
                    "\u{ff44}ebug",
                    "\u{ff41}ssert",
                ])
                .to_string(),
            10 if !plain => "\\\n".into(),
            11 if !bytes && self.chance(10) => "__\u{ff44}ebug__".into(),
            12 if self.chance(5) => "__debug__".into(),
            13 if formatted => self.pick(&["{{", "}}", "{{}}"]).to_string(),
            14 if !formatted => self.pick(&["{", "}", "{x}"]).to_string(),
            15 if q.triple && !plain => format!("{}{}", other, other).repeat(2),
            _ => "abc".into(),
        };
        c
    }

    fn fstring(&mut self) -> String {
        let Some(q) = self.quote() else {
            return self.name();
        };
        if self.fields.len() >= 3 {
            return self.name();
        }
        let prefix = *self.pick(&[
            "f", "f", "f", "f", "F", "F", "rf", "rF", "Rf", "RF", "fr", "fR", "Fr", "FR",
        ]);
        let raw = prefix.contains(['r', 'R']);
        let mut s = format!("{prefix}{}", q.text());
        for _ in 0..1 + self.rng.below(4) {
            if self.chance(50) {
                let field = self.field(q, 0);
                s.push_str(&field);
            } else {
                let chunk = self.chunk(q, raw, false, true);
                s.push_str(&chunk);
            }
        }
        s.push_str(&q.text());
        s
    }

    /// A replacement field of an f-string in quotes `q`; `level`: how deep in format specs.
    fn field(&mut self, q: Quote, level: u32) -> String {
        self.fields.push(q);
        let saved = (self.brackets, self.depth);
        self.brackets = 0;
        self.depth = self.depth.max(1);
        let mut e = if self.chance(self.rate_debug * 3) {
            self.debug_spelling()
        } else {
            self.expr()
        };
        if e.starts_with('{') {
            e.insert(0, ' ');
        }
        let mut f = format!("{{{e}");
        let mut plain = true;
        // (3.12.1 fails on `=` in a field of a format spec: ValueError from compile().)
        if self.syntax >= Syntax::Py38 && level == 0 && self.chance(15) {
            f.push('=');
            plain = false;
        }
        if self.chance(25) {
            let conversion = *self.pick(&["!r", "!s", "!a"]);
            f.push_str(conversion);
            plain = false;
        }
        // 3.6-3.11 allow one level of fields in a spec.
        let max_level = if self.syntax >= Syntax::Py312 { 2 } else { 1 };
        if self.chance(30) {
            plain = false;
            f.push(':');
            let other = if q.char == '"' { '\'' } else { '"' };
            let other = if self.fields.iter().all(|f| f.char != other) {
                other
            } else {
                '*'
            };
            for _ in 0..1 + self.rng.below(3) {
                if level < max_level && self.chance(40) {
                    let nested = self.field(q, level + 1);
                    f.push_str(&nested);
                } else {
                    let spec = *self.pick(&[">10", "^", ",", ".2f", "#x", "0", "<", "x"]);
                    let spec = if self.chance(10) {
                        format!("{other}^5")
                    } else {
                        spec.to_string()
                    };
                    f.push_str(&spec);
                }
            }
        }
        if plain
            && self.syntax >= Syntax::Py312
            && self.fields.iter().all(|f| f.triple)
            && self.chance(10)
        {
            f.push_str("  # a comment in a field\n");
        }
        f.push('}');
        (self.brackets, self.depth) = saved;
        self.fields.pop();
        f
    }

    // ---------------------------------------------------------------- the bytes

    fn finish(mut self) -> Vec<u8> {
        let mut text = std::mem::take(&mut self.out);
        if self.chance(5) {
            text.pop(); // no newline at the end
        }
        let mut head = String::new();
        if self.chance(8) {
            head.push_str("#!/usr/bin/python3\n");
        }
        if self.chance(12) {
            let cookie = *self.pick(&[
                "# -*- coding: utf-8 -*-\n",
                "# coding=utf8\n",
                "# vim: set fileencoding=utf-8 :\n",
                "# -*- coding: latin-1 -*-\n",
                "# coding: ascii\n",
            ]);
            head.push_str(cookie);
        }
        text.insert_str(0, &head);
        let style = self.rng.below(100);
        let mut bytes = Vec::with_capacity(text.len() + 8);
        if self.chance(4) {
            bytes.extend_from_slice(b"\xef\xbb\xbf");
        }
        for c in text.bytes() {
            if c != b'\n' {
                bytes.push(c);
                continue;
            }
            let end: &[u8] = match style {
                0..=69 => b"\n",
                70..=81 => b"\r\n",
                82..=91 => b"\r",
                _ => [&b"\n"[..], b"\r\n", b"\r"][self.rng.below(3)],
            };
            bytes.extend_from_slice(end);
        }
        bytes
    }
}

/// A real source from `corpus` drawn by `seed`, edited in ways that mostly keep it valid:
/// every line end turned into `\r\n` or `\r`, an `assert` or a compatibility spelling of
/// `__debug__` inserted at the start of a line, a name respelled with compatibility
/// characters everywhere, a docstring added under a `def` or `class` line. Real code has the
/// shapes a generator does not think of; the edits add what makes levels differ.
pub fn mutated(seed: u64, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let Ok(text) = std::str::from_utf8(&corpus[rng.below(corpus.len())]) else {
        return corpus[0].clone();
    };
    let mut lines: Vec<String> = text.split('\n').map(String::from).collect();
    let indent_of = |l: &str| l[..l.len() - l.trim_start().len()].to_string();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(lines.len());
        match rng.below(5) {
            0 => {
                let pad = indent_of(&lines[at]);
                lines.insert(at, format!("{pad}assert x"));
            }
            1 => {
                let mut g = Gen::new(rng.next());
                let spelling = g.debug_spelling();
                let pad = indent_of(&lines[at]);
                lines.insert(at, format!("{pad}DEBUG = {spelling}"));
            }
            2 => {
                // Respell one name everywhere (in strings and comments too, which is harmless).
                let words: Vec<&str> = lines[at]
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| {
                        w.len() >= 3
                            && w.as_bytes()[0].is_ascii_lowercase()
                            && !KEYWORDS.contains(w)
                    })
                    .collect();
                if let Some(&word) = words.get(rng.below(words.len().max(1))) {
                    let first = word.chars().next().unwrap();
                    let fullwidth = char::from_u32(0xff41 + (first as u32 - 'a' as u32)).unwrap();
                    let respelled = format!("{fullwidth}{}", &word[1..]);
                    let word = word.to_string();
                    for l in &mut lines {
                        *l = replace_word(l, &word, &respelled);
                    }
                }
            }
            3 => {
                if let Some(def) = (at..lines.len()).find(|&k| {
                    let t = lines[k].trim_start();
                    (t.starts_with("def ") || t.starts_with("class ")) && t.ends_with(':')
                }) {
                    let pad = lines[def + 1..]
                        .iter()
                        .find(|l| !l.trim().is_empty())
                        .map_or("    ".to_string(), |l| indent_of(l));
                    lines.insert(def + 1, format!("{pad}'''inserted doc'''"));
                }
            }
            _ => {}
        }
    }
    let end = *rng.pick(&["\n", "\n", "\r\n", "\r"]);
    lines.join(end).into_bytes()
}

/// Keywords are matched before NFKC: respelled, they are names (and a syntax error).
const KEYWORDS: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda",
    "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield", "match",
    "case", "type",
];

/// `line` with every whole-word `word` replaced.
fn replace_word(line: &str, word: &str, with: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    let is_name = |c: char| c.is_alphanumeric() || c == '_';
    while let Some(k) = rest.find(word) {
        let before = rest[..k].chars().next_back().or(out.chars().next_back());
        let after = rest[k + word.len()..].chars().next();
        out.push_str(&rest[..k]);
        if before.is_some_and(is_name) || after.is_some_and(is_name) {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = &rest[k + word.len()..];
    }
    out.push_str(rest);
    out
}
