//! The diff side of the BTF transform: find the ELF files in both images, pair the
//! kernel modules by name, and learn from the pairs how the new build renumbers.

use std::{collections::HashMap, ops::Range};

use object::{
    elf::FileHeader64,
    read::elf::{FileHeader as _, SectionHeader as _},
    LittleEndian,
};
use rayon::prelude::*;

use super::{btf, Overlay, Remap, SourceTransform, MAX_REGION_LEN};
use crate::sparse::Input;

/// ELF files are looked for at multiples of this many bytes: file data starts on
/// such a boundary in tar archives (512), file systems (their block size) and at 0
/// in a bare file.
const ALIGN: u64 = 512;
/// `\x7fELF`, 64-bit, little-endian, ELF version 1.
const ELF64_LE: [u8; 7] = *b"\x7fELF\x02\x01\x01";
/// Most ELF files looked at per image; an image with more keeps the first ones.
const MAX_FILES: usize = 1 << 20;

/// A kernel module (an ELF file with `.modinfo` and a `.BTF` that walks) in an image.
struct Module<'a> {
    /// The `name=` entry of `.modinfo`.
    name: &'a [u8],
    /// The `.BTF` section's bytes in the image.
    btf: Range<u64>,
}

/// The module starting at `at`, if one does and its `.BTF` lies inside the image.
fn module_at(data: &[u8], at: u64) -> Option<Module<'_>> {
    let file = data.get(at as usize..)?;
    let header = FileHeader64::<LittleEndian>::parse(file).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, file).ok()?;
    let (_, modinfo) = sections.section_by_name(endian, b".modinfo")?;
    let name = modinfo
        .data(endian, file)
        .ok()?
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"name="))?;
    let (_, btf_section) = sections.section_by_name(endian, b".BTF")?;
    let (offset, size) = btf_section.file_range(endian)?;
    let start = at.checked_add(offset)?;
    let btf = start..start.checked_add(size)?;
    let bytes = data.get(btf.start as usize..btf.end as usize)?;
    if size == 0 || size > MAX_REGION_LEN || btf::walk(bytes, |_, _| {}).is_err() {
        return None;
    }
    Some(Module { name, btf })
}

/// The modules of an image, in image order, their BTF regions disjoint.
fn modules(img: Input<'_>) -> Vec<Module<'_>> {
    let len = img.data.len() as u64;
    let starts: Vec<u64> = img
        .data_pieces(0, len)
        .into_iter()
        .flat_map(|piece| (piece.start.next_multiple_of(ALIGN)..piece.end).step_by(ALIGN as usize))
        .filter(|&at| img.data.get(at as usize..at as usize + 7) == Some(&ELF64_LE[..]))
        .take(MAX_FILES)
        .collect();
    let found: Vec<Module<'_>> = starts
        .par_iter()
        .filter_map(|&at| module_at(img.data, at))
        .collect();
    let mut out: Vec<Module<'_>> = Vec::with_capacity(found.len());
    for m in found {
        if out.last().is_none_or(|prev| prev.btf.end <= m.btf.start) {
            out.push(m);
        }
    }
    out
}

/// The references of a BTF blob: `(what, value)` in record order.
fn references(b: &[u8]) -> Vec<(btf::Ref, u32)> {
    let mut out = Vec::new();
    // `modules` kept only blobs that walk.
    let _ = btf::walk(b, |at, what| {
        if let Some(v) = b.get(at..at + 4) {
            out.push((what, u32::from_le_bytes([v[0], v[1], v[2], v[3]])));
        }
    });
    out
}

/// The modules by name; `None` for a name that more than one module has.
fn by_name<'a>(mods: &[Module<'a>]) -> HashMap<&'a [u8], Option<Range<u64>>> {
    let mut m: HashMap<&[u8], Option<Range<u64>>> = HashMap::new();
    for module in mods {
        m.entry(module.name)
            .and_modify(|e| *e = None)
            .or_insert(Some(module.btf.clone()));
    }
    m
}

fn slice<'a>(data: &'a [u8], r: &Range<u64>) -> &'a [u8] {
    &data[r.start as usize..r.end as usize]
}

/// Counts of `(old, new)` value pairs, per kind of reference.
type Votes = [HashMap<(u32, u32), u32>; 2];

/// Votes of one module pair whose BTF has the same shape in both images (the same
/// references in the same order); nothing otherwise.
fn vote(old: &[u8], new: &[u8]) -> Votes {
    let mut votes = Votes::default();
    let (a, b) = (references(old), references(new));
    if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| x.0 != y.0) {
        return votes;
    }
    for ((what, x), (_, y)) in a.into_iter().zip(b) {
        *votes[what as usize].entry((x, y)).or_default() += 1;
    }
    votes
}

/// The map the votes elect: each old value goes where most of its references went;
/// entries that add what the one before adds are left out (the map is piecewise).
fn elect(votes: HashMap<(u32, u32), u32>) -> Remap {
    let mut best: HashMap<u32, (u32, u32)> = HashMap::new();
    for ((x, y), n) in votes {
        let e = best.entry(x).or_insert((y, n));
        if n > e.1 || (n == e.1 && y < e.0) {
            *e = (y, n);
        }
    }
    let mut entries: Vec<(u32, u32)> = best
        .into_iter()
        .map(|(x, (y, _))| (x, y.wrapping_sub(x)))
        .collect();
    entries.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (x, add) in entries {
        let current = out.last().map_or(0, |e| e.1);
        if add != current {
            out.push((x, add));
        }
    }
    Remap(out)
}

/// Learns the BTF transform from the modules that both images hold. `None` when
/// there is nothing to renumber.
pub(crate) fn learn(old: Input<'_>, new: Input<'_>) -> Option<Overlay> {
    let (old_mods, new_mods) = rayon::join(|| modules(old), || modules(new));
    if old_mods.is_empty() || new_mods.is_empty() {
        return None;
    }
    let old_by_name = by_name(&old_mods);
    let pairs: Vec<(Range<u64>, Range<u64>)> = by_name(&new_mods)
        .into_iter()
        .filter_map(|(name, b)| Some((old_by_name.get(name)?.clone()?, b?)))
        .collect();
    let votes = pairs
        .par_iter()
        .map(|(o, n)| vote(slice(old.data, o), slice(new.data, n)))
        .reduce(Votes::default, |mut a, b| {
            for (into, from) in a.iter_mut().zip(b) {
                for (k, n) in from {
                    *into.entry(k).or_default() += n;
                }
            }
            a
        });
    let [types, strings] = votes;
    let transform = SourceTransform {
        regions: old_mods.into_iter().map(|m| m.btf).collect(),
        types: elect(types),
        strings: elect(strings),
    };
    if transform.types.0.is_empty() && transform.strings.0.is_empty() {
        return None;
    }
    overlay(old.data, transform)
}

/// The rewritten regions of `old` under `transform`, keeping only the regions that
/// change; `None` if none does.
pub(crate) fn overlay(old: &[u8], mut transform: SourceTransform) -> Option<Overlay> {
    let rewritten: Vec<Option<Vec<u8>>> = transform
        .regions
        .par_iter()
        .map(|r| {
            let plain = &old[r.start as usize..r.end as usize];
            let mut bytes = plain.to_vec();
            let changed = transform.rewrite(&mut bytes).is_ok() && bytes != plain;
            changed.then_some(bytes)
        })
        .collect();
    let mut kept = Vec::new();
    let mut bytes = Vec::new();
    for (r, b) in transform.regions.iter().zip(rewritten) {
        if let Some(b) = b {
            kept.push(r.clone());
            bytes.push(b);
        }
    }
    if kept.is_empty() {
        return None;
    }
    transform.regions = kept;
    Some(Overlay {
        transform,
        rewritten: bytes,
    })
}
