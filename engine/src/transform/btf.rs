//! BTF (BPF Type Format) type sections: where their type and string references are.
//!
//! A kernel module's `.BTF` section is "split" BTF: its type ids and string offsets
//! continue those of the kernel it was built for. When the kernel's own BTF changes,
//! every module's references to it are renumbered, although the module itself did
//! not change. The walk below finds those references so that a source transform can
//! renumber the old image's modules the way the new kernel numbers them.
//!
//! The layout (Linux `include/uapi/linux/btf.h`): a header
//! `{magic u16 = 0xeb9f, version u8 = 1, flags u8, hdr_len u32, type_off u32,
//! type_len u32, str_off u32, str_len u32}`, then at `hdr_len + type_off` the type
//! records, `type_len` bytes in all. Each record is `{name_off u32, info u32,
//! size_or_type u32}` followed by data that depends on the kind (`info >> 24 & 0x1f`)
//! and on `vlen` (`info & 0xffff`).

use std::cell::Cell;

/// What a 32-bit field refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Ref {
    /// A type id.
    Type,
    /// An offset into the string section.
    Str,
}

/// Magic number at the start of a BTF blob (little-endian).
pub(crate) const MAGIC: u16 = 0xeb9f;
/// Length of the fixed header this walk reads.
const HEADER_LEN: usize = 24;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Bytes the walk reads: plain, or cells that the rewrite writes while it walks
/// (the walk reads only the header and each record's `info` word, which the
/// rewrite never changes).
trait Words {
    fn len(&self) -> usize;
    fn word(&self, at: usize) -> Option<u32>;
}

impl Words for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn word(&self, at: usize) -> Option<u32> {
        u32_at(self, at)
    }
}

impl Words for [Cell<u8>] {
    fn len(&self) -> usize {
        <[Cell<u8>]>::len(self)
    }
    fn word(&self, at: usize) -> Option<u32> {
        let c = self.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([
            c[0].get(),
            c[1].get(),
            c[2].get(),
            c[3].get(),
        ]))
    }
}

/// Calls `visit(offset, what)` for every type and string reference in the type
/// records of the BTF blob `b` (offsets relative to `b`), in record order. Fails, and
/// may have visited some fields, when `b` is not a BTF blob whose type records end
/// exactly at `type_len` inside `b`, or has a record kind other than 1 to 19.
pub(crate) fn walk(b: &[u8], visit: impl FnMut(usize, Ref)) -> Result<(), &'static str> {
    walk_records(b, visit, |_| {})
}

/// Like [`walk`], also calling `record(range)` with each record's bytes after
/// visiting its references.
pub(crate) fn walk_records(
    b: &[u8],
    visit: impl FnMut(usize, Ref),
    record: impl FnMut(std::ops::Range<usize>),
) -> Result<(), &'static str> {
    walk_core(b, visit, record)
}

fn walk_core<W: Words + ?Sized>(
    b: &W,
    mut visit: impl FnMut(usize, Ref),
    mut record: impl FnMut(std::ops::Range<usize>),
) -> Result<(), &'static str> {
    // Magic (LE u16), version 1 (u8), any flags (u8).
    let first = b.word(0).ok_or("shorter than a BTF header")?;
    if first & 0xffff != u32::from(MAGIC) || (first >> 16) & 0xff != 1 {
        return Err("not BTF version 1");
    }
    let field = |at| b.word(at).ok_or("shorter than a BTF header");
    let (hdr_len, type_off, type_len) = (field(4)?, field(8)?, field(12)?);
    if (hdr_len as usize) < HEADER_LEN {
        return Err("BTF header shorter than 24 bytes");
    }
    let start = u64::from(hdr_len) + u64::from(type_off);
    let end = start + u64::from(type_len);
    if end > b.len() as u64 {
        return Err("BTF type section ends past the region");
    }
    let (mut p, end) = (start as usize, end as usize);
    while p < end {
        let rec = |at: usize| b.word(at).filter(|_| at + 4 <= end);
        let (Some(_), Some(info), Some(_)) = (rec(p), rec(p + 4), rec(p + 8)) else {
            return Err("BTF type record cut short");
        };
        let record_start = p;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        visit(p, Ref::Str);
        if matches!(kind, 2 | 8 | 9 | 10 | 11 | 12 | 13 | 14 | 17 | 18) {
            visit(p + 8, Ref::Type);
        }
        p += 12;
        // (bytes per member, the members' fields as (offset, what)).
        let (each, refs): (usize, &[(usize, Ref)]) = match kind {
            1 | 14 | 17 => (4, &[]),
            3 => (12, &[(0, Ref::Type), (4, Ref::Type)]),
            4 | 5 => (12, &[(0, Ref::Str), (4, Ref::Type)]),
            6 => (8, &[(0, Ref::Str)]),
            13 => (8, &[(0, Ref::Str), (4, Ref::Type)]),
            15 => (12, &[(0, Ref::Type)]),
            19 => (12, &[(0, Ref::Str)]),
            2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => (0, &[]),
            _ => return Err("BTF record of an unknown kind"),
        };
        // INT, VAR, DECL_TAG and ARRAY carry one member whatever vlen says; the
        // kinds without member data none (their vlen is not a count).
        let count = if each == 0 {
            0
        } else if matches!(kind, 1 | 3 | 14 | 17) {
            1
        } else {
            vlen
        };
        let len = each * count;
        if len > end - p {
            return Err("BTF type record cut short");
        }
        for m in 0..count {
            for &(off, what) in refs {
                visit(p + m * each + off, what);
            }
        }
        p += len;
        record(record_start..p);
    }
    Ok(())
}

/// The string section of a BTF blob that [`walk`] accepts, if it lies inside `b`.
pub(crate) fn strings(b: &[u8]) -> Option<&[u8]> {
    let hdr_len = u64::from(u32_at(b, 4)?);
    let (off, len) = (u64::from(u32_at(b, 16)?), u64::from(u32_at(b, 20)?));
    let start = hdr_len + off;
    b.get(start as usize..(start + len) as usize)
}

/// Longest string [`string_at`] returns: BTF names are far shorter, and a section
/// without NULs must not make every lookup read to its end.
const MAX_STRING: usize = 1024;

/// The NUL-terminated string at `at` of a string section, if it is at most
/// [`MAX_STRING`] bytes.
pub(crate) fn string_at(strings: &[u8], at: usize) -> Option<&[u8]> {
    let rest = strings.get(at..)?;
    let window = rest.get(..rest.len().min(MAX_STRING + 1))?;
    let end = memchr::memchr(0, window)?;
    window.get(..end)
}

/// Rewrites every reference of the BTF blob `b` in place through `map`. Fails, and
/// leaves `b` partly rewritten, when [`walk`] fails.
pub(crate) fn rewrite(
    b: &mut [u8],
    mut map: impl FnMut(Ref, u32) -> u32,
) -> Result<(), &'static str> {
    let cells = Cell::from_mut(b).as_slice_of_cells();
    walk_core(
        cells,
        |at, what| {
            if let (Some(v), Some(c)) = (cells.word(at), cells.get(at..at + 4)) {
                for (cell, byte) in c.iter().zip(map(what, v).to_le_bytes()) {
                    cell.set(byte);
                }
            }
        },
        |_| {},
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small BTF blob: INT, PTR -> 1, STRUCT with two members, FUNC_PROTO with one
    /// parameter, FUNC -> 4, ARRAY of 1 indexed by 1, ENUM with two values; then a
    /// string section.
    pub(crate) fn sample() -> Vec<u8> {
        let mut t: Vec<u32> = Vec::new();
        let rec = |t: &mut Vec<u32>, name, kind: u32, vlen: u32, st| {
            t.extend([name, kind << 24 | vlen, st]);
        };
        rec(&mut t, 1, 1, 0, 4);
        t.push(0x0100_0020);
        rec(&mut t, 0, 2, 0, 100_001);
        rec(&mut t, 5, 4, 2, 16);
        t.extend([9, 1, 0, 13, 100_002, 64]);
        rec(&mut t, 0, 13, 1, 1);
        t.extend([17, 100_003]);
        rec(&mut t, 21, 12, 1, 100_004);
        rec(&mut t, 0, 3, 0, 0);
        t.extend([1, 1, 8]);
        rec(&mut t, 25, 6, 2, 4);
        t.extend([29, 0, 33, 1]);
        deltaward_testkit::modules::btf_blob(&t, b"\0int\0s\0a\0bb\0x\0f\0arr\0e\0A\0B\0")
    }

    #[test]
    fn walk_finds_every_reference_in_order() {
        let b = sample();
        let mut seen = Vec::new();
        walk(&b, |at, what| {
            seen.push((u32_at(&b, at).expect("field inside the blob"), what))
        })
        .expect("sample is valid");
        use Ref::{Str as S, Type as T};
        assert_eq!(
            seen,
            [
                (1, S),
                (0, S),
                (100_001, T),
                (5, S),
                (9, S),
                (1, T),
                (13, S),
                (100_002, T),
                (0, S),
                (1, T),
                (17, S),
                (100_003, T),
                (21, S),
                (100_004, T),
                (0, S),
                (1, T),
                (1, T),
                (25, S),
                (29, S),
                (33, S),
            ]
        );
    }

    #[test]
    fn rewrite_changes_only_references() {
        let mut b = sample();
        let before = b.clone();
        rewrite(&mut b, |what, v| match what {
            Ref::Type => v + 7,
            Ref::Str => v + 1000,
        })
        .expect("sample is valid");
        let mut changed = 0;
        for (i, (x, y)) in before.chunks(4).zip(b.chunks(4)).enumerate() {
            if x != y {
                changed += 1;
                assert!(i * 4 >= 24, "header changed at {i}");
            }
        }
        assert_eq!(changed, 20);
        // The string section is untouched.
        let types_end = 24 + u32_at(&b, 12).expect("header") as usize;
        assert_eq!(before[types_end..], b[types_end..]);
    }

    #[test]
    fn damaged_blobs_are_refused() {
        let b = sample();
        let types_end = 24 + u32_at(&b, 12).expect("header") as usize;
        // Cut inside the type records: the declared type_len passes the end.
        assert!(walk(&b[..types_end - 4], |_, _| {}).is_err());
        // A type_len that ends inside a record.
        let mut short = b.clone();
        let tl = u32_at(&b, 12).expect("header") - 4;
        short[12..16].copy_from_slice(&tl.to_le_bytes());
        assert!(walk(&short, |_, _| {}).is_err());
        // An unknown kind.
        let mut unknown = b.clone();
        unknown[24 + 7] = 20;
        assert_eq!(
            walk(&unknown, |_, _| {}),
            Err("BTF record of an unknown kind")
        );
        // Wrong magic, and a header that is too short.
        assert!(walk(&b[1..], |_, _| {}).is_err());
        assert!(walk(&b[..20], |_, _| {}).is_err());
        // A huge vlen cannot make the walk read outside the blob.
        let mut huge = b.clone();
        huge[24 + 32..24 + 34].copy_from_slice(&[0xff, 0xff]);
        assert!(walk(&huge, |_, _| {}).is_err());
    }
}
