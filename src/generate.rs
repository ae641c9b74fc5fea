//! `pyclink --generate WHAT` (hidden): the man pages and shell completion scripts, rendered from
//! the same clap definition that parses the command line, so they cannot drift from `--help`.
//! The Makefile's `install` writes them; packagers never need a running shell or help2man.

use std::io::Write;

use clap::{Arg, CommandFactory};
use clap_complete::Shell;
use roff::{bold, roman, Roff};

use crate::cli::Cli;

/// What `--generate` writes to stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// `man`: pyclink(1); `man-SUB`: pyclink-SUB(1), the page of one subcommand.
    Man(Option<String>),
    /// `complete-bash`, `complete-zsh`, `complete-fish`.
    Completion(Shell),
}

/// pyclink's command line with the hidden `--generate WHAT`. The pages and scripts are made from
/// [`Cli`] alone, so the flag is in none of them (clap_complete would complete a hidden flag).
pub fn command() -> clap::Command {
    Cli::command().arg(
        Arg::new("generate")
            .long("generate")
            .value_name("WHAT")
            .value_parser(clap::value_parser!(Item))
            .hide(true)
            .exclusive(true),
    )
}

/// The shells a completion script is generated for, with their `--generate` names.
pub const SHELLS: [(&str, Shell); 3] = [
    ("complete-bash", Shell::Bash),
    ("complete-zsh", Shell::Zsh),
    ("complete-fish", Shell::Fish),
];

impl std::str::FromStr for Item {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "man" {
            return Ok(Item::Man(None));
        }
        if let Some(sub) = s.strip_prefix("man-") {
            return Ok(Item::Man(Some(sub.to_string())));
        }
        SHELLS
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, shell)| Item::Completion(*shell))
            .ok_or_else(|| {
                let mut names = vec!["man".to_string()];
                names.extend(man_subcommands().iter().map(|s| format!("man-{s}")));
                names.extend(SHELLS.map(|(name, _)| name.to_string()));
                format!("expected one of {}", names.join(", "))
            })
    }
}

/// The subcommands that have a man page of their own, pyclink-NAME(1).
pub fn man_subcommands() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .collect()
}

/// Write `item` to `out`.
pub fn write(item: &Item, out: &mut dyn Write) -> Result<(), String> {
    let mut cmd = Cli::command();
    match item {
        Item::Completion(shell) => {
            clap_complete::generate(*shell, &mut cmd, "pyclink", out);
            Ok(())
        }
        Item::Man(sub) => {
            // Building gives each subcommand its display name (pyclink-compile), the page's title;
            // clap's `help` subcommand has no page.
            cmd = cmd.disable_help_subcommand(true);
            cmd.build();
            let page = match sub {
                None => cmd,
                Some(name) => cmd
                    .get_subcommands()
                    .find(|c| c.get_name() == name && !c.is_hide_set())
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "no subcommand {name:?} (man pages: man, {})",
                            man_subcommands()
                                .iter()
                                .map(|s| format!("man-{s}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?,
            };
            out.write_all(man_page(page)?.as_bytes())
                .map_err(|e| e.to_string())
        }
    }
}

/// The page of `cmd`: clap_mangen's, with the description and the text after the options laid
/// out from the help's plain-text conventions (see [`layout`]), and a SEE ALSO section naming the
/// other pages. No date: the page is the same bytes in every build (reproducible packages).
fn man_page(cmd: clap::Command) -> Result<String, String> {
    let mut raw = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .manual("pyclink manual")
        .source(format!("pyclink {}", env!("CARGO_PKG_VERSION")))
        .render(&mut raw)
        .map_err(|e| e.to_string())?;
    let raw = String::from_utf8(raw).map_err(|e| e.to_string())?;

    let mut page = String::new();
    for (heading, body) in sections(&raw) {
        match heading {
            ".SH DESCRIPTION" => {
                let text = cmd.get_long_about().or(cmd.get_about());
                page += heading;
                page += "\n";
                page += &layout(
                    &text.map(|t| t.to_string()).unwrap_or_default(),
                    Block::Fill,
                );
            }
            ".SH EXTRA" => {
                let text = cmd
                    .get_after_long_help()
                    .or(cmd.get_after_help())
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                // "Examples:" on a line of its own names the section.
                match text.strip_prefix("Examples:\n") {
                    Some(rest) => {
                        page += &format!(".SH EXAMPLES\n{}", layout(rest, Block::Literal))
                    }
                    None => page += &format!(".SH NOTES\n{}", layout(&text, Block::Literal)),
                }
            }
            _ => {
                page += heading;
                page += body;
            }
        }
    }
    page += &see_also(&cmd);
    Ok(page)
}

/// The rendered page cut before each `.SH` line: (the `.SH` line, or "" for the preamble; the
/// rest including its newlines).
fn sections(raw: &str) -> Vec<(&str, &str)> {
    let mut starts: Vec<usize> = raw.match_indices("\n.SH ").map(|(i, _)| i + 1).collect();
    starts.insert(0, 0);
    starts.push(raw.len());
    starts
        .windows(2)
        .map(|w| {
            let section = &raw[w[0]..w[1]];
            if section.starts_with(".SH ") {
                let end = section.find('\n').unwrap_or(section.len());
                (&section[..end], &section[end..])
            } else {
                ("", section)
            }
        })
        .collect()
}

/// How an indented block of the help text is set.
#[derive(Clone, Copy)]
enum Block {
    /// Prose wrapped at 100 columns for `--help`: refilled to the reader's width.
    Fill,
    /// Commands and file contents: kept line for line.
    Literal,
}

/// Roff for pyclink's plain-text help: paragraphs are separated by blank lines; a paragraph is
/// prose, or an optional heading line ending in ':' followed by lines indented by two spaces,
/// which become an indented block.
fn layout(text: &str, block: Block) -> String {
    let mut roff = Roff::new();
    for para in text.trim_end().split("\n\n") {
        let lines: Vec<&str> = para.lines().filter(|l| !l.trim().is_empty()).collect();
        let Some(first) = lines.first() else {
            continue;
        };
        let indented = |l: &&str| l.starts_with("  ");
        let (heading, rest) = if lines.iter().all(indented) {
            (None, &lines[..])
        } else if lines.len() > 1 && first.ends_with(':') && lines[1..].iter().all(indented) {
            (Some(*first), &lines[1..])
        } else {
            roff.control("PP", []);
            roff.text([roman(join(&lines))]);
            continue;
        };
        roff.control("PP", []);
        if let Some(h) = heading {
            roff.text([roman(h)]);
        }
        roff.control("RS", ["2"]);
        match block {
            Block::Fill if rest.iter().any(|l| l[2..].starts_with(' ')) => terms(&mut roff, rest),
            Block::Fill => {
                roff.text([roman(join(rest))]);
            }
            Block::Literal => {
                roff.control("nf", []);
                for l in rest {
                    roff.text([roman(&l[2..])]);
                }
                roff.control("fi", []);
            }
        }
        roff.control("RE", []);
    }
    // As clap_mangen writes them: a plain ' would be typeset as a closing quote.
    roff.to_roff().replace('\'', "\\*(Aq")
}

/// A table in the help (`  term     what it means`, continued on lines indented deeper): each
/// term a tagged paragraph, its text refilled. Refilled as prose, the terms would run into it.
fn terms(roff: &mut Roff, lines: &[&str]) {
    let mut items: Vec<(&str, Vec<&str>)> = Vec::new();
    for l in lines {
        let body = &l[2..];
        match items.last_mut() {
            Some((_, text)) if body.starts_with(' ') => text.push(body),
            _ => {
                let (term, text) = body.split_once("  ").unwrap_or((body, ""));
                items.push((term, vec![text]));
            }
        }
    }
    for (term, text) in items {
        roff.control("TP", ["10"]);
        roff.text([bold(term)]);
        roff.text([roman(join(&text))]);
    }
}

fn join(lines: &[&str]) -> String {
    lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ")
}

/// SEE ALSO: pyclink(1) and every subcommand's page, except the page itself, then the pages of
/// the build-system integrations: dh_pyclink(1) and the RPM macros, pyclink-rpm(7).
fn see_also(cmd: &clap::Command) -> String {
    let this = cmd.get_display_name().unwrap_or(cmd.get_name());
    let pages: Vec<(String, &str)> = std::iter::once("pyclink".to_string())
        .chain(man_subcommands().iter().map(|s| format!("pyclink-{s}")))
        .filter(|p| p != this)
        .map(|p| (p, "1"))
        .chain([
            ("dh_pyclink".to_string(), "1"),
            ("pyclink-rpm".to_string(), "7"),
        ])
        .collect();
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, (p, section)) in pages.iter().enumerate() {
        let sep = if i + 1 < pages.len() { ", " } else { "" };
        line.push(bold(p.as_str()));
        line.push(roman(format!("({section}){sep}")));
    }
    roff.text(line);
    roff.to_roff()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(what: &str) -> String {
        let mut out = Vec::new();
        write(&what.parse().unwrap(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_item_renders() {
        let man = render("man");
        assert!(
            man.starts_with(".ie") || man.contains(".TH pyclink 1"),
            "{man}"
        );
        assert!(man.contains("\\-\\-buildroot"), "{man}");
        assert!(
            !man.contains("generate"),
            "the hidden flag is not documented"
        );
        for sub in man_subcommands() {
            let page = render(&format!("man-{sub}"));
            assert!(page.contains(&format!(".TH pyclink-{sub} 1 ")), "{page}");
        }
        for (name, _) in SHELLS {
            let script = render(name);
            assert!(script.contains("pyclink"), "{name}");
            assert!(script.contains("buildroot"), "{name}: {script}");
            assert!(
                !script.contains("generate"),
                "{name}: the hidden flag is not completed"
            );
        }
    }

    /// pyclink-verify(1)'s table of checks stays a table (one tagged paragraph per check), and
    /// the paragraph after it is one of its own.
    #[test]
    fn tables_in_the_help_stay_tables() {
        let page = render("man-verify");
        for term in ["header", "code", "links", "strays"] {
            assert!(
                page.contains(&format!(".TP 10\n\\fB{term}\\fR\n")),
                "{term}: {page}"
            );
        }
        assert!(page.contains(".PP\nWith \\-o LEVEL"), "{page}");
    }

    #[test]
    fn unknown_items_are_named() {
        assert!("complete-tcsh"
            .parse::<Item>()
            .unwrap_err()
            .contains("man-compile"));
        let e = write(&Item::Man(Some("nope".into())), &mut Vec::new()).unwrap_err();
        assert!(e.contains("\"nope\"") && e.contains("man-normalize"), "{e}");
    }
}
