//! The update notice a hospital operator reads (IEC 81001-5-1 6.3.1, 6.3.2): version,
//! compatibility, security fixes and severity, support class and end of support,
//! manufacturer approval or mitigations.

use std::fmt::Write;

use crate::model::{Release, Severity, SupportClass};

/// Output formats of a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain text.
    Text,
    /// Markdown.
    Markdown,
    /// A standalone HTML page.
    Html,
    /// JSON (the notice's fields, for other systems).
    Json,
}

/// A severity as notices print it.
pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

/// A support class as notices print it.
pub fn support(c: SupportClass) -> &'static str {
    match c {
        SupportClass::Maintained => "maintained",
        SupportClass::Supported => "supported (security and safety fixes only)",
        SupportClass::Required => "required (the manufacturer requires this update)",
    }
}

/// Removes what could take over a terminal or fake a layout from untrusted text:
/// control characters (C0, DEL, C1: escapes, carriage returns, line breaks, which
/// become a space) and Unicode bidirectional controls (dropped) and line/paragraph
/// separators (a space). Used by notices, and by the CLI for anything unverified.
pub fn printable(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '\u{2028}' | '\u{2029}' => Some(' '),
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => None,
            c if c.is_control() => Some(' '),
            c => Some(c),
        })
        .collect()
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none stated".into()
    } else {
        v.iter()
            .map(|x| printable(x))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A line of a section: text, or a list item. Every string is cleaned of control
/// characters when the line is made; each format escapes it when it is written.
enum Line {
    Text(String),
    Item(String),
}

fn text(s: impl AsRef<str>) -> Line {
    Line::Text(printable(s.as_ref()))
}

fn item(s: impl AsRef<str>) -> Line {
    Line::Item(printable(s.as_ref()))
}

/// A section of the notice: a heading and its lines.
struct Section {
    heading: &'static str,
    lines: Vec<Line>,
}

/// The approval statement, from the signed boolean only: no text of the notes is
/// part of it.
fn approval(r: &Release) -> &'static str {
    if r.approval.approved {
        "Approved by the manufacturer."
    } else {
        "NOT approved by the manufacturer. Mitigations:"
    }
}

fn sections(r: &Release) -> Vec<Section> {
    let c = &r.compatibility;
    let mut fixes: Vec<_> = r.security_fixes.iter().collect();
    fixes.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(&b.id)));
    let mut approval_lines = vec![Line::Text(approval(r).into())];
    if !r.approval.approved {
        approval_lines.extend(r.approval.mitigations.iter().map(item));
    }
    vec![
        Section {
            heading: "Approval",
            lines: approval_lines,
        },
        Section {
            heading: "Compatibility",
            lines: vec![
                text(&c.statement),
                text(format!("Applies from versions: {}", list(&c.applies_from))),
                text(format!(
                    "Hardware: {} (ids: {})",
                    list(&c.hardware),
                    list(&r.hardware_ids)
                )),
                text(format!("Requires: {}", list(&c.requires))),
                text(format!("Incompatible with: {}", list(&c.incompatible_with))),
            ],
        },
        Section {
            heading: "Security fixes",
            lines: if fixes.is_empty() {
                vec![text("None in this release.")]
            } else {
                fixes
                    .iter()
                    .map(|f| {
                        item(format!(
                            "{} [{}]{}: {}",
                            f.id,
                            severity(f.severity),
                            f.cvss_vector
                                .as_deref()
                                .map(|v| format!(" {v}"))
                                .unwrap_or_default(),
                            f.summary
                        ))
                    })
                    .collect()
            },
        },
        Section {
            heading: "Support",
            lines: vec![text(format!(
                "Support class: {}; end of support: {}",
                support(r.support.class),
                r.support.end_of_support
            ))],
        },
        Section {
            heading: "Integrity",
            lines: vec![
                text(format!("Image: {} bytes", r.target.length)),
                text(format!("BLAKE3: {}", r.target.blake3)),
                text(format!("SHA-256: {}", r.target.sha256)),
                text("Every update is signed; devices verify the signature and these hashes before installing."),
            ],
        },
        Section {
            heading: "Installation",
            lines: vec![text(&r.installation.instructions)],
        },
    ]
}

fn title(r: &Release) -> String {
    printable(&format!("Update notice: {} {}", r.product, r.version))
}

fn subtitle(r: &Release) -> String {
    printable(&format!(
        "Release counter {}, issued {}, valid until {}",
        r.counter, r.issued, r.expires
    ))
}

/// The approval line under the title, before any text of the notes.
fn status(r: &Release) -> &'static str {
    if r.approval.approved {
        "Manufacturer approval: APPROVED"
    } else {
        "Manufacturer approval: NOT APPROVED (see the mitigations below)"
    }
}

/// Text from a document made safe for HTML: [`printable`], then [`html_escape`].
pub fn html_text(s: &str) -> String {
    html_escape(&printable(s))
}

/// Escapes text for HTML element content and quoted attribute values (`&`, `<`, `>`,
/// `"`, `'`). Apply [`printable`] first to text from documents.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Escapes one line of text for Markdown: characters that start inline markup
/// (emphasis, code, links, images, autolinks, raw HTML, tables, strikethrough) are
/// backslash-escaped or written as entities, and a line that Markdown would read as
/// a block (heading, list, quote, thematic break, setext underline, code block) has
/// its leading spaces dropped and its first character escaped.
fn md_escape(s: &str) -> String {
    let s = s.trim_start();
    let mut out = String::with_capacity(s.len());
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let list_number = digits > 0 && matches!(s.as_bytes().get(digits), Some(b'.' | b')'));
    for (i, c) in s.chars().enumerate() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '!' | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '#' | '-' | '+' | '=' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            '.' | ')' if list_number && i == digits => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Renders the notice. Every string from the release is cleaned of control
/// characters and escaped for the format; the approval statement and the status line
/// under the title come from the signed `approval.approved` alone.
pub fn render(r: &Release, format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Text => {
            let t = title(r);
            let _ = writeln!(
                out,
                "{t}\n{}\n{}\n{}",
                "=".repeat(t.chars().count()),
                subtitle(r),
                status(r)
            );
            for s in sections(r) {
                let _ = writeln!(out, "\n{}:", s.heading.to_uppercase());
                for l in s.lines {
                    match l {
                        Line::Text(l) => {
                            let _ = writeln!(out, "  {l}");
                        }
                        Line::Item(l) => {
                            let _ = writeln!(out, "  - {l}");
                        }
                    }
                }
            }
        }
        Format::Markdown => {
            let _ = writeln!(
                out,
                "# {}\n\n{}  \n**{}**",
                md_escape(&title(r)),
                md_escape(&subtitle(r)),
                md_escape(status(r))
            );
            for s in sections(r) {
                let _ = writeln!(out, "\n## {}\n", s.heading);
                for l in s.lines {
                    match l {
                        Line::Text(l) => {
                            let _ = writeln!(out, "{}  ", md_escape(&l));
                        }
                        Line::Item(l) => {
                            let _ = writeln!(out, "- {}", md_escape(&l));
                        }
                    }
                }
            }
        }
        Format::Html => {
            let _ = writeln!(
                out,
                "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{0}</title></head>\n<body>\n<h1>{0}</h1>\n<p>{1}</p>\n<p><strong>{2}</strong></p>",
                html_escape(&title(r)),
                html_escape(&subtitle(r)),
                html_escape(status(r))
            );
            for s in sections(r) {
                let _ = writeln!(out, "<h2>{}</h2>", s.heading);
                let (items, texts): (Vec<_>, Vec<_>) =
                    s.lines.iter().partition(|l| matches!(l, Line::Item(_)));
                for l in texts {
                    if let Line::Text(l) = l {
                        let _ = writeln!(out, "<p>{}</p>", html_escape(l));
                    }
                }
                if !items.is_empty() {
                    let _ = writeln!(out, "<ul>");
                    for l in items {
                        if let Line::Item(l) = l {
                            let _ = writeln!(out, "<li>{}</li>", html_escape(l));
                        }
                    }
                    let _ = writeln!(out, "</ul>");
                }
            }
            let _ = writeln!(out, "</body>\n</html>");
        }
        Format::Json => {
            let v = serde_json::json!({
                "product": r.product,
                "version": r.version,
                "counter": r.counter,
                "issued": r.issued,
                "expires": r.expires,
                "hardware_ids": r.hardware_ids,
                "approval": r.approval,
                "compatibility": r.compatibility,
                "security_fixes": r.security_fixes,
                "support": r.support,
                "target": r.target,
                "installation": r.installation,
            });
            out = format!("{v:#}\n");
        }
    }
    out
}
