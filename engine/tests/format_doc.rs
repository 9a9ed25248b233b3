//! `engine/FORMAT.md` against the code: its byte tables, magic bytes, lengths, limits,
//! levels' options strings, frame kinds and signature comments are read from the
//! document and checked against what the engine writes, so they cannot drift again.

use std::collections::BTreeMap;

use deltaward_testkit as kit;

use deltaward_engine::{
    format::{
        bsdiff_max_decoded_len, empty_hash, COPY_CHUNK, FRAME_ENTRY_LEN, HEADER_LEN, MAGIC,
        MANIFEST_FIXED_LEN, MANIFEST_MAGIC, MAX_FRAME_LEN, MAX_MANIFEST_LEN, MAX_SIGNATURE_LEN,
        MAX_TEXT_LEN, MAX_WINDOW, VERSION,
    },
    signature_key_id, ApplyOptions, BuildOptions, FrameKind, Header, Level, Manifest,
};

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/FORMAT.md")).expect("FORMAT.md")
}

/// The document with every run of whitespace made one space (sentences wrap).
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The lines under the heading that starts with `heading`, up to the next heading.
fn section(doc: &str, heading: &str) -> String {
    let mut lines = doc.lines().skip_while(|l| !l.starts_with(heading));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("FORMAT.md has no heading {heading:?}"));
    let mut out = vec![first];
    out.extend(lines.take_while(|l| !l.starts_with('#')));
    out.join("\n")
}

/// The body rows of the Markdown tables in `text`, as trimmed cells.
fn rows(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut header = true;
    for line in text.lines() {
        let Some(inner) = line.trim().strip_prefix('|') else {
            header = true;
            continue;
        };
        let cells: Vec<String> = inner
            .trim_end_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect();
        if header {
            header = false; // the column names
        } else if !cells[0].starts_with("--") && !cells[0].starts_with(":-") {
            out.push(cells);
        }
    }
    out
}

fn unticked(cell: &str) -> &str {
    cell.trim_matches('`')
}

/// A quantity as the document writes it: `67 108 864`, `4096`, `64 MiB`, `1 TiB`,
/// possibly followed by other words.
fn quantity(text: &str) -> u64 {
    let mut n: Option<u64> = None;
    for word in text.split_whitespace() {
        let shift = match word.trim_end_matches([',', '.', ')', ';', '`']) {
            "KiB" => 10,
            "MiB" => 20,
            "GiB" => 30,
            "TiB" => 40,
            w if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => {
                let group: u64 = w.parse().expect("digits");
                n = Some(n.unwrap_or(0) * 10u64.pow(w.len() as u32) + group);
                continue;
            }
            _ => break,
        };
        return n.expect("a number before the unit") << shift;
    }
    n.unwrap_or_else(|| panic!("no quantity in {text:?}"))
}

/// The largest value a table row's meaning allows: `at most X`, or `A to X`.
fn stated_max(meaning: &str) -> u64 {
    if let Some((_, rest)) = meaning.split_once("at most ") {
        quantity(rest)
    } else if let Some((_, rest)) = meaning.split_once(" to ") {
        quantity(rest)
    } else {
        panic!("no maximum in {meaning:?}")
    }
}

/// The vector patch and its manifest: real bytes the code wrote.
fn vector() -> (Vec<u8>, Manifest) {
    let patch = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/patch.dwp"
    ))
    .expect("patch.dwp");
    let m = kit::manifest(&patch);
    (patch, m)
}

/// Checks a byte table: its heading's length is `len`, its rows tile `0..len`, and
/// each field sits in `bytes` where the table says, holding `fields[name]`.
fn check_byte_table(heading: &str, len: usize, bytes: &[u8], fields: &[(&str, Vec<u8>)]) {
    let doc = doc();
    let text = section(&doc, heading);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.ends_with(&format!("({len} bytes)")),
        "{first:?}: the code's length is {len}"
    );
    let want: BTreeMap<&str, &Vec<u8>> = fields.iter().map(|(n, v)| (*n, v)).collect();
    let mut seen = Vec::new();
    let mut next = 0usize;
    for r in rows(&text) {
        let (offset, size, field): (usize, usize, &str) = (
            r[0].parse().expect("offset"),
            r[1].parse().expect("size"),
            &r[3],
        );
        assert_eq!(
            offset, next,
            "{heading}: {field} is not where the last field ends"
        );
        next = offset + size;
        let value = want
            .get(field)
            .unwrap_or_else(|| panic!("{heading}: field {field} unknown to this test"));
        assert_eq!(value.len(), size, "{heading}: size of {field}");
        assert_eq!(
            &bytes[offset..offset + size],
            value.as_slice(),
            "{heading}: {field} at offset {offset}"
        );
        seen.push(field.to_owned());
    }
    assert_eq!(
        next, len,
        "{heading}: the fields do not add up to {len} bytes"
    );
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !seen.iter().any(|s| s == *k))
        .collect();
    assert!(
        missing.is_empty(),
        "{heading}: fields not documented: {missing:?}"
    );
}

#[test]
fn header_table_matches_the_writer() {
    let h = Header {
        manifest_len: 0x0403_0201,
        signature_len: 0x0807_0605,
        payload_len: 0x1817_1615_1413_1211,
    };
    check_byte_table(
        "## Header",
        HEADER_LEN,
        &h.to_bytes(),
        &[
            ("magic", MAGIC.to_vec()),
            ("version", VERSION.to_le_bytes().to_vec()),
            ("flags", vec![0; 2]),
            ("manifest_len", h.manifest_len.to_le_bytes().to_vec()),
            ("signature_len", h.signature_len.to_le_bytes().to_vec()),
            ("reserved", vec![0; 4]),
            ("payload_len", h.payload_len.to_le_bytes().to_vec()),
        ],
    );
}

#[test]
fn manifest_fixed_part_matches_the_writer() {
    let (_, m) = vector();
    check_byte_table(
        "### Fixed part",
        MANIFEST_FIXED_LEN,
        &m.to_bytes(),
        &[
            ("magic", MANIFEST_MAGIC.to_vec()),
            ("version", VERSION.to_le_bytes().to_vec()),
            ("flags", vec![0; 2]),
            (
                "frame_count",
                (m.frames.len() as u32).to_le_bytes().to_vec(),
            ),
            ("source_size", m.source_size.to_le_bytes().to_vec()),
            ("source_hash", m.source_hash.0.to_vec()),
            ("target_size", m.target_size.to_le_bytes().to_vec()),
            ("target_hash", m.target_hash.0.to_vec()),
            ("block_size", m.block_size.to_le_bytes().to_vec()),
            ("reserved", vec![0; 4]),
            ("max_window", m.max_window.to_le_bytes().to_vec()),
            ("max_frame_len", m.max_frame_len.to_le_bytes().to_vec()),
            ("payload_len", m.payload_len.to_le_bytes().to_vec()),
        ],
    );
}

#[test]
fn frame_entry_table_matches_the_writer() {
    let (_, m) = vector();
    let bytes = m.to_bytes();
    let i = m
        .frames
        .iter()
        .position(|f| f.kind == FrameKind::Bsdiff)
        .expect("a bsdiff frame");
    let f = &m.frames[i];
    let start = MANIFEST_FIXED_LEN + 4 + m.tool.len() + m.options.len() + FRAME_ENTRY_LEN * i;
    let le = |v: u64| v.to_le_bytes().to_vec();
    check_byte_table(
        "### Frame entry",
        FRAME_ENTRY_LEN,
        &bytes[start..start + FRAME_ENTRY_LEN],
        &[
            ("kind", vec![f.kind as u8]),
            ("reserved", vec![0; 7]),
            ("target_offset", le(f.target_offset)),
            ("target_len", le(f.target_len)),
            ("source_offset", le(f.source_offset)),
            ("source_len", le(f.source_len)),
            ("payload_offset", le(f.payload_offset)),
            ("payload_len", le(f.payload_len)),
            ("payload_hash", f.payload_hash.0.to_vec()),
            ("output_hash", f.output_hash.0.to_vec()),
        ],
    );
}

#[test]
fn manifest_length_formula_matches() {
    let (_, m) = vector();
    let text = flat(&doc());
    let formula = format!(
        "exactly `{} + T + O + {} * frame_count`",
        MANIFEST_FIXED_LEN + 4,
        FRAME_ENTRY_LEN
    );
    assert!(text.contains(&formula), "FORMAT.md lacks {formula:?}");
    assert_eq!(
        m.to_bytes().len(),
        MANIFEST_FIXED_LEN + 4 + m.tool.len() + m.options.len() + FRAME_ENTRY_LEN * m.frames.len()
    );
    let intro = format!("a fixed {MANIFEST_FIXED_LEN}-byte part");
    assert!(text.contains(&intro), "FORMAT.md lacks {intro:?}");
    let entries = format!("frame entries of {FRAME_ENTRY_LEN} bytes");
    assert!(text.contains(&entries), "FORMAT.md lacks {entries:?}");
}

#[test]
fn magic_bytes_and_their_hex_match() {
    let text = doc();
    for magic in [MAGIC, MANIFEST_MAGIC] {
        let name = std::str::from_utf8(&magic).expect("ascii magic");
        let hex: Vec<String> = magic.iter().map(|b| format!("{b:02X}")).collect();
        let written = format!("`{name}` (`{}`)", hex.join(" "));
        assert!(text.contains(&written), "FORMAT.md lacks {written:?}");
    }
}

#[test]
fn empty_payload_hash_matches() {
    let text = flat(&doc());
    let (_, after) = text
        .split_once("BLAKE3 of the empty string")
        .expect("FORMAT.md names the empty string's BLAKE3");
    let hex = after
        .split('`')
        .nth(1)
        .expect("a hash in backticks after it");
    assert_eq!(hex, empty_hash().to_string());
}

#[test]
fn limits_match_the_constants() {
    let doc = doc();
    let text = flat(&doc);
    let constants: BTreeMap<&str, u64> = [
        ("MAX_MANIFEST_LEN", u64::from(MAX_MANIFEST_LEN)),
        ("MAX_SIGNATURE_LEN", u64::from(MAX_SIGNATURE_LEN)),
        ("MAX_TEXT_LEN", MAX_TEXT_LEN as u64),
        ("MAX_WINDOW", MAX_WINDOW),
        ("MAX_FRAME_LEN", MAX_FRAME_LEN),
    ]
    .into();
    // Every "MAX_X` (value)" in the text, as in "`max_window > MAX_WINDOW` (1 GiB)".
    let mut documented = BTreeMap::new();
    for piece in text.split("MAX_").skip(1) {
        let len = piece
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(piece.len());
        let name = format!("MAX_{}", &piece[..len]);
        let Some(value) = piece[len..].strip_prefix("` (") else {
            continue;
        };
        let value = quantity(value);
        let constant = constants
            .get(name.as_str())
            .unwrap_or_else(|| panic!("FORMAT.md names {name}, unknown to this test"));
        assert_eq!(value, *constant, "FORMAT.md's value of {name}");
        documented.insert(name, value);
    }
    for name in constants.keys() {
        assert!(
            documented.contains_key(*name),
            "FORMAT.md never gives {name}"
        );
    }
    // The same limits in the byte tables.
    let limit_rows: BTreeMap<String, String> = [
        section(&doc, "## Header"),
        section(&doc, "### Fixed part"),
        section(&doc, "### Text fields"),
    ]
    .iter()
    .flat_map(|s| rows(s))
    .map(|r| (r[3].clone(), r[4].clone()))
    .collect();
    for (field, max) in [
        ("manifest_len", u64::from(MAX_MANIFEST_LEN)),
        ("signature_len", u64::from(MAX_SIGNATURE_LEN)),
        ("max_window", MAX_WINDOW),
        ("max_frame_len", MAX_FRAME_LEN),
        ("tool_len (T)", MAX_TEXT_LEN as u64),
        ("options_len (O)", MAX_TEXT_LEN as u64),
    ] {
        let meaning = limit_rows
            .get(field)
            .unwrap_or_else(|| panic!("no table row for {field}"));
        assert_eq!(stated_max(meaning), max, "{field}: {meaning:?}");
    }
    // The applier's defaults, the copy chunk and the bsdiff bound.
    let defaults = ApplyOptions::default();
    let (_, after) = text
        .split_once("output-size limit (default ")
        .expect("output-size default");
    assert_eq!(quantity(after), defaults.max_target_size);
    let (_, after) = text
        .split_once("configured limit (default ")
        .expect("memory limit default");
    assert_eq!(quantity(after), defaults.memory_limit);
    let (_, after) = text.split_once("| copy, zero | ").expect("copy memory row");
    assert_eq!(quantity(after), COPY_CHUNK);
    let (_, after) = text
        .split_once("(that is `2 * target_len + ")
        .expect("bsdiff bound");
    assert_eq!(quantity(after), bsdiff_max_decoded_len(0));
    assert_eq!(bsdiff_max_decoded_len(1) - bsdiff_max_decoded_len(0), 2);
}

#[test]
fn levels_table_matches_describe() {
    let doc = doc();
    let levels = [Level::Fast, Level::Default, Level::Best];
    let mut found = 0;
    for r in rows(&section(&doc, "### Text fields")) {
        let Some(&level) = levels.iter().find(|l| l.name() == r[0]) else {
            continue;
        };
        found += 1;
        let opts = BuildOptions::default().level(level);
        let described = opts.describe();
        assert_eq!(
            unticked(&r[5]),
            described,
            "options string of level {}",
            r[0]
        );
        // The table's window and frame columns agree with the string.
        let value = |key: &str| -> u64 {
            described
                .split(' ')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{key} in {described:?}"))
        };
        assert_eq!(
            quantity(&r[3]),
            value("window"),
            "level {}: max window",
            r[0]
        );
        assert_eq!(
            quantity(&r[4]),
            value("frame"),
            "level {}: frame length",
            r[0]
        );
        assert_eq!(quantity(&r[1]), value("zstd"), "level {}: zstd level", r[0]);
    }
    assert_eq!(found, levels.len(), "the levels table lacks a level");
    // The template names the same keys, in the same order.
    let text = flat(&doc);
    let (_, after) = text
        .split_once("The options string is written as `")
        .expect("options template");
    let template = after.split('`').next().unwrap_or_default();
    let keys = |s: &str| -> Vec<String> {
        s.split(' ')
            .map(|kv| kv.split('=').next().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(keys(template), keys(&BuildOptions::default().describe()));
}

#[test]
fn frame_kinds_match() {
    let doc = doc();
    let table = rows(&section(&doc, "## Frame kinds"));
    assert_eq!(table.len(), 5, "the frame kinds table has one row per kind");
    for r in &table {
        let byte: u8 = r[0].parse().expect("kind byte");
        let kind = FrameKind::from_byte(byte).expect("a kind the code knows");
        assert_eq!(r[1], kind.name(), "kind {byte}");
    }
    assert!(FrameKind::from_byte(table.len() as u8).is_none());
    let entry = rows(&section(&doc, "### Frame entry"));
    let meaning = &entry.iter().find(|r| r[3] == "kind").expect("kind row")[4];
    let listed: Vec<String> = (0..5u8)
        .map(|b| format!("{b} {}", FrameKind::from_byte(b).expect("kind").name()))
        .collect();
    assert_eq!(meaning, &listed.join(", "));
}

#[test]
fn signature_comments_match() {
    let (patch, m) = vector();
    let doc = doc();
    let text = section(&doc, "## Signature");
    let line = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("FORMAT.md has no line {prefix:?}"))
            .to_owned()
    };
    let trusted = line("trusted comment: ")
        .replace("SOURCE_HASH", &m.source_hash.to_string())
        .replace("TARGET_HASH", &m.target_hash.to_string())
        .replace("TARGET_SIZE", &m.target_size.to_string());
    assert_eq!(trusted, m.trusted_comment());
    let signature = std::str::from_utf8(kit::sections(&patch).signature).expect("utf8");
    let key_id = signature_key_id(signature).expect("key id");
    let untrusted = line("untrusted comment: ").replace("KEYID", &key_id);
    assert_eq!(
        signature.lines().next(),
        Some(format!("untrusted comment: {untrusted}").as_str())
    );
}
