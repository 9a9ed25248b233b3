//! NOTES.toml and the update notice: parsing never panics; the notice rendered from
//! any notes has no control character but line breaks, notes text never starts a
//! line of the notice's own layout (title, status, headings), Markdown has no raw `<`
//! or unescaped link bracket, and the approval status and statement follow the signed
//! boolean alone.
#![no_main]

use deltaward_release::{
    model::{FullImage, Object, Release, Target, SPEC_VERSION},
    notice::{render, Format},
    repo::parse_notes,
};
use libfuzzer_sys::fuzz_target;

const HEADINGS: [&str; 6] = [
    "Approval",
    "Compatibility",
    "Security fixes",
    "Support",
    "Integrity",
    "Installation",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(n) = parse_notes(text) else { return };
    let object = Object {
        path: format!("objects/{}", "0".repeat(64)),
        blake3: deltaward_engine::Digest::default(),
        length: 1,
    };
    let r = Release {
        kind: "deltaward-release".into(),
        spec_version: SPEC_VERSION,
        product: "pump".into(),
        hardware_ids: n.hardware_ids,
        version: "2.0".into(),
        counter: 1,
        issued: "2026-11-28T12:00:00Z".into(),
        expires: "2027-11-28T12:00:00Z".into(),
        target: Target {
            length: 1,
            blake3: deltaward_engine::Digest::default(),
            sha256: deltaward_engine::Digest::default(),
        },
        bases: vec![],
        full_image: FullImage {
            object,
            compression: "zstd".into(),
            window_log: 23,
        },
        compatibility: n.compatibility,
        security_fixes: n.security_fixes,
        support: n.support,
        approval: n.approval,
        installation: n.installation,
    };
    let approved = r.approval.approved;
    let (status, statement) = if approved {
        (
            "Manufacturer approval: APPROVED",
            "Approved by the manufacturer.",
        )
    } else {
        (
            "Manufacturer approval: NOT APPROVED (see the mitigations below)",
            "NOT approved by the manufacturer. Mitigations:",
        )
    };
    for f in [Format::Text, Format::Markdown, Format::Html] {
        let out = render(&r, f);
        assert!(
            out.chars().all(|c| c == '\n' || !c.is_control()),
            "{f:?}: control character"
        );
        assert!(
            !out.chars().any(|c| ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)),
            "{f:?}: bidi control"
        );
    }

    // Text: every line of notes text is indented; the layout lines are fixed.
    let out = render(&r, Format::Text);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.get(3).copied(), Some(status));
    let heads: Vec<&str> = lines
        .iter()
        .skip(4)
        .filter(|l| !l.is_empty() && !l.starts_with("  "))
        .copied()
        .collect();
    let want: Vec<String> = HEADINGS
        .iter()
        .map(|h| format!("{}:", h.to_uppercase()))
        .collect();
    assert_eq!(heads, want, "notes text made a line of the layout");
    let after = lines
        .iter()
        .position(|l| *l == "APPROVAL:")
        .map(|i| lines[i + 1]);
    assert_eq!(after, Some(&*format!("  {statement}")));

    // Markdown: headings are the fixed ones, no raw HTML, no link or image brackets.
    let md = render(&r, Format::Markdown);
    assert!(!md.contains('<'), "raw < in Markdown");
    for (i, _) in md.match_indices(['[', ']']) {
        assert!(md[..i].ends_with('\\'), "unescaped bracket");
    }
    let heads: Vec<&str> = md.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(heads.len(), 1 + HEADINGS.len(), "notes text made a heading");
    assert!(md.contains(&format!("**{status}**")), "status line");
});
