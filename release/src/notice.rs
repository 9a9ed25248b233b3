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

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

fn support(c: SupportClass) -> &'static str {
    match c {
        SupportClass::Maintained => "maintained",
        SupportClass::Supported => "supported (security and safety fixes only)",
        SupportClass::Required => "required (the manufacturer requires this update)",
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none stated".into()
    } else {
        v.join(", ")
    }
}

/// A section of the notice: a heading and its lines.
struct Section {
    heading: &'static str,
    lines: Vec<String>,
}

fn sections(r: &Release) -> Vec<Section> {
    let c = &r.compatibility;
    let mut fixes: Vec<_> = r.security_fixes.iter().collect();
    fixes.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(&b.id)));
    let mut s = vec![
        Section {
            heading: "Approval",
            lines: if r.approval.approved {
                vec!["Approved by the manufacturer.".into()]
            } else {
                let mut l = vec!["NOT approved by the manufacturer. Mitigations:".into()];
                l.extend(r.approval.mitigations.iter().map(|m| format!("- {m}")));
                l
            },
        },
        Section {
            heading: "Compatibility",
            lines: vec![
                c.statement.clone(),
                format!("Applies from versions: {}", list(&c.applies_from)),
                format!("Hardware: {} (ids: {})", list(&c.hardware), r.hardware_ids.join(", ")),
                format!("Requires: {}", list(&c.requires)),
                format!("Incompatible with: {}", list(&c.incompatible_with)),
            ],
        },
        Section {
            heading: "Security fixes",
            lines: if fixes.is_empty() {
                vec!["None in this release.".into()]
            } else {
                fixes
                    .iter()
                    .map(|f| {
                        format!(
                            "- {} [{}]{}: {}",
                            f.id,
                            severity(f.severity),
                            f.cvss_vector.as_deref().map(|v| format!(" {v}")).unwrap_or_default(),
                            f.summary
                        )
                    })
                    .collect()
            },
        },
        Section {
            heading: "Support",
            lines: vec![format!(
                "Support class: {}; end of support: {}",
                support(r.support.class),
                r.support.end_of_support
            )],
        },
        Section {
            heading: "Integrity",
            lines: vec![
                format!("Image: {} bytes", r.target.length),
                format!("BLAKE3: {}", r.target.blake3),
                format!("SHA-256: {}", r.target.sha256),
                "Every update is signed; devices verify the signature and these hashes before installing.".into(),
            ],
        },
        Section {
            heading: "Installation",
            lines: vec![r.installation.instructions.clone()],
        },
    ];
    s.retain(|x| !x.lines.is_empty());
    s
}

fn title(r: &Release) -> String {
    format!("Update notice: {} {}", r.product, r.version)
}

fn subtitle(r: &Release) -> String {
    format!(
        "Release counter {}, issued {}, valid until {}",
        r.counter, r.issued, r.expires
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the notice.
pub fn render(r: &Release, format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Text => {
            let t = title(r);
            let _ = writeln!(out, "{t}\n{}\n{}", "=".repeat(t.len()), subtitle(r));
            for s in sections(r) {
                let _ = writeln!(out, "\n{}:", s.heading.to_uppercase());
                for l in s.lines {
                    let _ = writeln!(out, "  {l}");
                }
            }
        }
        Format::Markdown => {
            let _ = writeln!(out, "# {}\n\n{}", title(r), subtitle(r));
            for s in sections(r) {
                let _ = writeln!(out, "\n## {}\n", s.heading);
                for l in s.lines {
                    if l.starts_with("- ") {
                        let _ = writeln!(out, "{l}");
                    } else {
                        let _ = writeln!(out, "{l}  ");
                    }
                }
            }
        }
        Format::Html => {
            let _ = writeln!(
                out,
                "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{0}</title></head>\n<body>\n<h1>{0}</h1>\n<p>{1}</p>",
                html_escape(&title(r)),
                html_escape(&subtitle(r))
            );
            for s in sections(r) {
                let _ = writeln!(out, "<h2>{}</h2>", s.heading);
                let (items, text): (Vec<_>, Vec<_>) =
                    s.lines.iter().partition(|l| l.starts_with("- "));
                for l in text {
                    let _ = writeln!(out, "<p>{}</p>", html_escape(l));
                }
                if !items.is_empty() {
                    let _ = writeln!(out, "<ul>");
                    for l in items {
                        let _ = writeln!(out, "<li>{}</li>", html_escape(&l[2..]));
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
