//! The diff side of the BTF transform: find the ELF files in both images, pair the
//! kernel modules by name, and learn from the pairs how the new build renumbers.

use std::{collections::HashMap, ops::Range};

use object::{
    elf::FileHeader64,
    read::elf::{FileHeader as _, SectionHeader as _},
    LittleEndian,
};
use rayon::prelude::*;

use super::{
    btf, ExactMap, Overlay, RegionKind, Regions, Remap, SourceTransform, MAX_REGION_LEN,
    MODVERSION_LEN,
};
use crate::{diff::timed, sparse::Input};

/// `\x7fELF`, 64-bit, little-endian, ELF version 1.
pub(super) const ELF64_LE: [u8; 7] = *b"\x7fELF\x02\x01\x01";
/// Most BTF bytes (old and new together) that module pairs may bring to
/// learning (its votes take about as much again): the kernel image's pairs bring
/// 120 MB.
const MAX_LEARN_BTF: u64 = 256 << 20;
/// Most sections an ELF file may have to be taken for a module.
const MAX_SECTIONS: u64 = 4096;
/// Pieces of an image searched in parallel.
const SEARCH_PIECE: u64 = 4 << 20;
/// A piece stops probing once the probes have claimed this many times its length
/// (a probe walks at most what it claims): hostile data full of headers costs a
/// bounded multiple of a search, not a walk per header.
const PROBE_BUDGET: u64 = 4;

/// What a probe at one offset found, and how many bytes it may have walked.
pub(super) struct Probe<T> {
    pub(super) found: Option<(T, u64)>,
    pub(super) cost: u64,
}

/// Searches the data of `img` (its holes left out) for `pattern` and probes each
/// occurrence, in parallel pieces: `probe(at)` returns what starts at `at` and where
/// it ends (later occurrences inside it are skipped). Results in image order.
/// Occurrences are found at any offset: a tar archive keeps files at 512-byte
/// boundaries, a file system at block boundaries, a cpio archive at 4 bytes, and an
/// image may be shifted by any amount.
pub(super) fn search<T: Send>(
    img: Input<'_>,
    pattern: &[u8],
    probe: impl Fn(u64) -> Probe<T> + Sync,
) -> Vec<T> {
    let len = img.data.len() as u64;
    let extra = pattern.len() as u64 - 1;
    let pieces: Vec<Range<u64>> = img
        .data_pieces(0, len)
        .into_iter()
        .flat_map(|p| {
            (p.start..p.end)
                .step_by(SEARCH_PIECE as usize)
                .map(move |s| s..(s + SEARCH_PIECE + extra).min(p.end))
        })
        .collect();
    let finder = memchr::memmem::Finder::new(pattern);
    pieces
        .par_iter()
        .flat_map_iter(|p| {
            let hay = &img.data[p.start as usize..p.end as usize];
            let (mut out, mut skip_to, mut spent) = (Vec::new(), 0u64, 0u64);
            let budget = PROBE_BUDGET * (p.end - p.start);
            for at in finder.find_iter(hay).map(|i| p.start + i as u64) {
                if at < skip_to {
                    continue;
                }
                if spent > budget {
                    break;
                }
                let r = probe(at);
                spent += r.cost.max(1);
                if let Some((t, end)) = r.found {
                    out.push(t);
                    skip_to = end;
                }
            }
            out
        })
        .collect()
}

/// A kernel module (an ELF file with `.modinfo` and a `.BTF` inside the image) in an image.
struct Module<'a> {
    /// The `name=` entry of `.modinfo`.
    name: &'a [u8],
    /// The `.BTF` section's bytes in the image.
    btf: Range<u64>,
    /// The `__versions` section's bytes in the image, when it has whole entries.
    versions: Option<Range<u64>>,
}

/// The module starting at `at`, if one does and its `.BTF` lies inside the image.
fn module_at(data: &[u8], at: u64) -> Probe<Module<'_>> {
    let mut cost = 0;
    let found = parse_module(data, at, &mut cost).map(|m| {
        let end = m.btf.end;
        (m, end)
    });
    Probe { found, cost }
}

/// [`module_at`]'s parse; `cost` gets the size of the section table it scans.
fn parse_module<'a>(data: &'a [u8], at: u64, cost: &mut u64) -> Option<Module<'a>> {
    let file = data.get(at as usize..)?;
    let header = FileHeader64::<LittleEndian>::parse(file).ok()?;
    let endian = header.endian().ok()?;
    // Each name lookup scans the section table: bound it (modules have about 60).
    let count = header.shnum(endian, file).ok()? as u64;
    if count > MAX_SECTIONS {
        return None;
    }
    *cost = count * 64;
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
    // Not walked here: what needs the BTF to walk walks it (the regions are found
    // and checked apart, and a pair that does not walk casts no votes).
    if size == 0 || size > MAX_REGION_LEN || btf.end > data.len() as u64 {
        return None;
    }
    let versions = sections
        .section_by_name(endian, b"__versions")
        .and_then(|(_, s)| s.file_range(endian))
        .filter(|&(_, size)| {
            size > 0 && size <= MAX_REGION_LEN && size % MODVERSION_LEN as u64 == 0
        })
        .and_then(|(offset, size)| {
            let start = at.checked_add(offset)?;
            let end = start.checked_add(size)?;
            (end <= data.len() as u64).then_some(start..end)
        });
    Some(Module {
        name,
        btf,
        versions,
    })
}

/// What an ELF header found in an image starts.
enum Elf<'a> {
    Module(Module<'a>),
    Program(super::programs::Program),
}

/// The kernel modules and the x86-64 programs of an image, in one search.
fn elf_files(img: Input<'_>) -> (Vec<Module<'_>>, Vec<super::programs::Program>) {
    let found = search(img, &ELF64_LE, |at| {
        let m = module_at(img.data, at);
        if m.found.is_some() {
            return Probe {
                found: m.found.map(|(m, end)| (Elf::Module(m), end)),
                cost: m.cost,
            };
        }
        let p = super::programs::program_at(img.data, at);
        Probe {
            found: p.found.map(|(p, end)| (Elf::Program(p), end)),
            cost: m.cost + p.cost,
        }
    });
    let (mut modules, mut programs) = (Vec::new(), Vec::new());
    for elf in found {
        match elf {
            Elf::Module(m) => modules.push(m),
            Elf::Program(p) => programs.push(p),
        }
    }
    (
        disjoint_modules(modules),
        super::programs::bounded(programs),
    )
}

/// The modules in image order, their BTF regions disjoint.
fn disjoint_modules(mut found: Vec<Module<'_>>) -> Vec<Module<'_>> {
    found.sort_by_key(|m| m.btf.start);
    let mut out: Vec<Module<'_>> = Vec::with_capacity(found.len());
    for m in found {
        if out.last().is_none_or(|prev| prev.btf.end <= m.btf.start) {
            out.push(m);
        }
    }
    out
}

/// The start of a BTF blob as the kernel build writes it: magic, version 1, no
/// flags, a 24-byte header.
const BTF_START: [u8; 8] = [0x9f, 0xeb, 1, 0, 24, 0, 0, 0];

/// Every BTF blob of an image that walks, sorted and disjoint. Found by their
/// header rather than through ELF section tables, so that the modules a file system
/// stored in fragments, whose section tables are not where their ELF header says,
/// still count.
fn btf_blobs(img: Input<'_>) -> Vec<Range<u64>> {
    let mut found = search(img, &BTF_START, |at| blob_at(img.data, at));
    found.sort_unstable_by_key(|r| r.start);
    found.dedup();
    let mut out: Vec<Range<u64>> = Vec::with_capacity(found.len());
    for r in found {
        if out.last().is_none_or(|prev| prev.end <= r.start) {
            out.push(r);
        }
    }
    out
}

/// The BTF blob starting at `at`: its length from the header, at most
/// [`MAX_REGION_LEN`], inside the image, and a walk that succeeds.
fn blob_at(data: &[u8], at: u64) -> Probe<Range<u64>> {
    let mut cost = 0;
    let found = parse_blob(data, at, &mut cost).map(|r| {
        let end = r.end;
        (r, end)
    });
    Probe { found, cost }
}

fn parse_blob(data: &[u8], at: u64, cost: &mut u64) -> Option<Range<u64>> {
    let header = data.get(at as usize..)?.get(..24)?;
    let word = |i: usize| {
        u64::from(u32::from_le_bytes([
            header[i],
            header[i + 1],
            header[i + 2],
            header[i + 3],
        ]))
    };
    let body = (word(8) + word(12)).max(word(16) + word(20));
    let end = at.checked_add(word(4) + body)?;
    if end - at > MAX_REGION_LEN {
        return None;
    }
    let bytes = data.get(at as usize..end as usize)?;
    *cost = end - at;
    btf::walk(bytes, |_, _| {}).is_ok().then_some(at..end)
}

/// The references of a BTF blob: `(what, value)` in record order; `None` if it
/// does not walk.
fn references(b: &[u8]) -> Option<Vec<(btf::Ref, u32)>> {
    let mut out = Vec::new();
    btf::walk(b, |at, what| {
        if let Some(v) = b.get(at..at + 4) {
            out.push((what, u32::from_le_bytes([v[0], v[1], v[2], v[3]])));
        }
    })
    .ok()?;
    Some(out)
}

/// The modules by name; `None` for a name that more than one module has.
fn by_name<'m, 'a>(mods: &'m [Module<'a>]) -> HashMap<&'a [u8], Option<&'m Module<'a>>> {
    let mut m: HashMap<&[u8], Option<&Module<'a>>> = HashMap::new();
    for module in mods {
        m.entry(module.name)
            .and_modify(|e| *e = None)
            .or_insert(Some(module));
    }
    m
}

/// `(symbol name, CRC)` of each entry of a `__versions` table.
fn crcs(table: &[u8]) -> impl Iterator<Item = (&[u8], u64)> {
    table.chunks_exact(MODVERSION_LEN).map(|e| {
        let mut crc = [0u8; 8];
        crc.copy_from_slice(&e[..8]);
        (&e[8..], u64::from_le_bytes(crc))
    })
}

/// Votes for the CRC map from one module pair: each symbol both tables list, by
/// name.
fn vote_crcs(old: &[u8], new: &[u8], votes: &mut Vec<u64>) {
    let before: HashMap<&[u8], u64> = crcs(old).collect();
    for (name, y) in crcs(new) {
        let Some(&x) = before.get(name) else { continue };
        if let (Ok(x), Ok(y)) = (u32::try_from(x), u32::try_from(y)) {
            if x != y {
                votes.push(ballot(x, y));
            }
        }
    }
}

/// One vote for `old -> new`, sortable by the old value.
fn ballot(old: u32, new: u32) -> u64 {
    u64::from(old) << 32 | u64::from(new)
}

fn blobs<'a>(data: &'a [u8], mods: &[Module<'_>]) -> Vec<&'a [u8]> {
    mods.iter().map(|m| slice(data, &m.btf)).collect()
}

fn slice<'a>(data: &'a [u8], r: &Range<u64>) -> &'a [u8] {
    &data[r.start as usize..r.end as usize]
}

/// Ballots per kind: BTF type ids, BTF string offsets, CRCs.
type Votes = [Vec<u64>; 3];

/// Votes of one module pair: its BTF references when the BTF has the same shape
/// in both images (the same references in the same order), and its CRCs.
fn vote(old: &[u8], new: &[u8], votes: &mut Votes) {
    let (Some(a), Some(b)) = (references(old), references(new)) else {
        return;
    };
    if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| x.0 != y.0) {
        return;
    }
    for ((what, x), (_, y)) in a.into_iter().zip(b) {
        votes[what as usize].push(ballot(x, y));
    }
}

/// Each old value with the new value most of its votes went to (the smallest such
/// on a tie), sorted. Sorting rather than hashing keeps the result independent of
/// the order the votes came in, and the cost bounded whatever values an image holds.
fn majority(mut votes: Vec<u64>) -> Vec<(u32, u32)> {
    votes.par_sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut best: Option<(u32, u32, usize)> = None;
    for run in votes.chunk_by(|a, b| a == b) {
        let (x, y, n) = ((run[0] >> 32) as u32, run[0] as u32, run.len());
        match best {
            Some((bx, _, bn)) if bx == x => {
                if n > bn {
                    best = Some((x, y, n));
                }
            }
            _ => {
                out.extend(best.map(|(bx, by, _)| (bx, by)));
                best = Some((x, y, n));
            }
        }
    }
    out.extend(best.map(|(bx, by, _)| (bx, by)));
    out
}

/// The map the votes elect: each old value goes where most of its references went;
/// entries that add what the one before adds are left out (the map is piecewise).
fn elect(votes: Vec<u64>) -> Remap {
    let entries = majority(votes)
        .into_iter()
        .map(|(x, y)| (x, y.wrapping_sub(x)));
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (x, add) in entries {
        let current = out.last().map_or(0, |e| e.1);
        if add != current {
            out.push((x, add));
        }
    }
    Remap::from_sorted(out)
}

/// Where a kernel's modules' own type ids and string offsets start: split BTF
/// numbers a module's types after the kernel's, and its strings after the kernel's
/// string section.
#[derive(Debug, Clone, Copy, Default)]
struct Bases {
    types: u32,
    strings: u32,
}

/// The most common value, if any.
fn mode(values: impl Iterator<Item = u32>) -> Option<u32> {
    let mut counts: HashMap<u32, u32> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(v, n)| (n, v))
        .map(|(v, _)| v)
}

/// Estimates the [`Bases`] of an image's modules: in a module whose highest type
/// reference is to its last type, that reference minus the number of its types
/// plus one; likewise for its highest string reference and its last string. The
/// most common estimate wins. A wrong estimate only makes the patch larger.
fn bases(blobs: &[&[u8]]) -> Bases {
    let per_blob = blobs.par_iter().filter_map(|b| {
        let (mut records, mut max_type, mut max_str) = (0u32, 0u32, 0u32);
        btf::walk_records(
            b,
            |at, what| {
                let v = b
                    .get(at..at + 4)
                    .map_or(0, |v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
                match what {
                    btf::Ref::Type => max_type = max_type.max(v),
                    btf::Ref::Str => max_str = max_str.max(v),
                }
            },
            |_| records += 1,
        )
        .ok()?;
        let strings = btf::strings(b)?;
        // The start of the last string: after the NUL before the final one.
        let body = strings.strip_suffix(&[0])?;
        let last = body.iter().rposition(|&c| c == 0).map_or(0, |i| i + 1) as u32;
        Some((
            max_type.checked_add(1).and_then(|m| m.checked_sub(records)),
            max_str.checked_sub(last),
        ))
    });
    let (types, strings): (Vec<_>, Vec<_>) = per_blob.unzip();
    Bases {
        types: mode(types.into_iter().flatten()).unwrap_or(u32::MAX),
        strings: mode(strings.into_iter().flatten()).unwrap_or(u32::MAX),
    }
}

/// A map from `(old, new)` pairs sorted by `old`: pieces that add the same amount
/// merged.
fn pieces(pairs: impl IntoIterator<Item = (u32, u32)>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (x, y) in pairs {
        let add = y.wrapping_sub(x);
        if out.last().is_none_or(|e| e.1 != add) {
            out.push((x, add));
        }
    }
    out
}

/// One module's own maps (types, strings): how the new build renumbered the
/// module's own types and strings, found by matching its records and strings by
/// content. Each is empty where the global map already says the same.
fn local_maps(
    old: &[u8],
    new: &[u8],
    ob: Bases,
    nb: Bases,
    global: (&Remap, &Remap),
) -> (Remap, Remap) {
    let word = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map_or(0, |v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
    };
    let (Some(old_strs), Some(new_strs)) = (btf::strings(old), btf::strings(new)) else {
        return Default::default();
    };
    // Strings: the module's own strings by content. foldhash rather than SipHash,
    // and two sorts rather than a queue per type key (`pair_in_order`): kernel-tar's
    // own maps took 420 ms at one thread, then 308 ms. Each offset is looked at once
    // however many references share it (the first reference's, so the map is what
    // one look per reference gives).
    let mut new_offsets: HashMap<&[u8], u32, FastState> = HashMap::default();
    let mut seen = Offsets::new(new_strs.len());
    let _ = btf::walk(new, |at, what| {
        let v = word(new, at);
        if what == btf::Ref::Str && v >= nb.strings && seen.first(v - nb.strings) {
            if let Some(s) = btf::string_at(new_strs, (v - nb.strings) as usize) {
                new_offsets.entry(s).or_insert(v);
            }
        }
    });
    let mut string_pairs: Vec<(u32, u32)> = Vec::new();
    let mut seen = Offsets::new(old_strs.len());
    let _ = btf::walk(old, |at, what| {
        let v = word(old, at);
        if what == btf::Ref::Str && v >= ob.strings && seen.first(v - ob.strings) {
            let content = btf::string_at(old_strs, (v - ob.strings) as usize);
            if let Some(&to) = content.and_then(|s| new_offsets.get(s)) {
                string_pairs.push((v, to));
            }
        }
    });
    string_pairs.sort_unstable();
    string_pairs.dedup_by_key(|p| p.0);
    let strings = Remap::from_sorted(pieces(string_pairs.iter().copied()));
    let map_str = |v: u32| strings.map_within(global.1, v);

    // Types: each record keyed by its bytes with references normalised (own types
    // as one marker, the rest as the new build numbers them); equal keys pair up
    // in order.
    let keys =
        |b: &[u8], base: u32, norm_str: &dyn Fn(u32) -> u32, norm_type: &dyn Fn(u32) -> u32| {
            let (mut refs, mut records) = (Vec::new(), Vec::new());
            let _ = btf::walk_records(b, |at, what| refs.push((at, what)), |r| records.push(r));
            let mut refs = refs.into_iter().peekable();
            let mut keys = Vec::with_capacity(records.len());
            let mut bytes = Vec::new();
            for range in records {
                bytes.clear();
                bytes.extend_from_slice(&b[range.clone()]);
                while let Some((at, what)) = refs.next_if(|(at, _)| *at < range.end) {
                    let v = word(b, at);
                    let n = match what {
                        btf::Ref::Str => norm_str(v),
                        btf::Ref::Type if v >= base => u32::MAX,
                        btf::Ref::Type => norm_type(v),
                    };
                    let i = at - range.start;
                    bytes[i..i + 4].copy_from_slice(&n.to_le_bytes());
                }
                keys.push(xxhash_rust::xxh3::xxh3_64(&bytes));
            }
            keys
        };
    let old_keys = keys(old, ob.types, &map_str, &|v| global.0.map(v));
    let new_keys = keys(new, nb.types, &|v| v, &|v| v);
    let type_pairs = pair_in_order(&old_keys, &new_keys)
        .into_iter()
        .filter_map(|(i, j)| Some((ob.types.checked_add(i)?, nb.types.checked_add(j)?)));
    let types = Remap::from_sorted(pieces(type_pairs));
    let redundant = |local: &Remap, outer: &Remap, values: &[u32]| {
        values
            .iter()
            .all(|&v| local.map_within(outer, v) == outer.map(v))
    };
    let own_types: Vec<u32> = (ob.types..ob.types.saturating_add(old_keys.len() as u32)).collect();
    let own_strings: Vec<u32> = string_pairs.iter().map(|p| p.0).collect();
    let types = if redundant(&types, global.0, &own_types) {
        Remap::default()
    } else {
        types
    };
    let strings = if redundant(&strings, global.1, &own_strings) {
        Remap::default()
    } else {
        strings
    };
    (types, strings)
}

/// Which offsets into a string table of `len` bytes have been looked at.
struct Offsets(Vec<u64>);

impl Offsets {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)])
    }

    /// Whether `at` is inside the table and looked at for the first time; marks it.
    /// Offsets past the table name no string and are never marked.
    fn first(&mut self, at: u32) -> bool {
        let (word, bit) = ((at / 64) as usize, 1u64 << (at % 64));
        match self.0.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            _ => false,
        }
    }
}

/// The hasher of the learning's maps keyed by bytes: foldhash, seeded per process.
/// Nothing iterates these maps, so the seed cannot reach the patch.
type FastState = foldhash::fast::RandomState;

/// Pairs equal keys of `old` and `new` in order: the first old record with a key
/// takes the first new record with it, the second the second, and so on. Returns
/// `(old index, new index)` by old index. Two sorts rather than a queue per key:
/// a module has tens of thousands of records.
fn pair_in_order(old: &[u64], new: &[u64]) -> Vec<(u32, u32)> {
    let sorted = |keys: &[u64]| {
        let mut v: Vec<(u64, u32)> = keys.iter().zip(0u32..).map(|(&k, i)| (k, i)).collect();
        v.sort_unstable();
        v
    };
    let (a, b) = (sorted(old), sorted(new));
    let mut pairs = Vec::with_capacity(a.len().min(b.len()));
    let (mut x, mut y) = (a.iter().peekable(), b.iter().peekable());
    while let (Some(&&(ka, i)), Some(&&(kb, j))) = (x.peek(), y.peek()) {
        match ka.cmp(&kb) {
            std::cmp::Ordering::Less => {
                x.next();
            }
            std::cmp::Ordering::Greater => {
                y.next();
            }
            std::cmp::Ordering::Equal => {
                pairs.push((i, j));
                x.next();
                y.next();
            }
        }
    }
    pairs.sort_unstable();
    pairs
}

/// What learning looks for, beyond the kernel modules' shared renumbering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Learning {
    /// Maps of their own for modules whose BTF the new build reordered.
    pub(crate) own_maps: bool,
    /// The programs' address maps (x86-64 and AArch64 code, pointers, relocations).
    pub(crate) programs: bool,
}

impl Learning {
    /// Everything learning can find.
    pub(crate) const ALL: Self = Self {
        own_maps: true,
        programs: true,
    };
}

/// Learns the source transform: the kernel modules' renumbering from the modules
/// that both images hold, and the programs' address maps from the x86-64 and
/// AArch64 programs both hold, where `what` asks for them. `None` when there is
/// nothing to rewrite.
pub(crate) fn learn(old: Input<'_>, new: Input<'_>, what: Learning) -> Option<SourceTransform> {
    let ((old_mods, old_programs), (new_mods, new_programs)) =
        timed("learn: find ELF files", || {
            rayon::join(|| elf_files(old), || elf_files(new))
        });
    let (modules, programs) = rayon::join(
        || learn_modules(old, new, &old_mods, &new_mods, what.own_maps),
        || {
            what.programs
                .then(|| super::programs::learn(old, new, &old_programs, &new_programs))
                .flatten()
        },
    );
    let mut transform = match (modules, programs) {
        (None, None) => return None,
        (modules, programs) => {
            let mut t = modules.unwrap_or_default();
            if let Some((regions, spaces)) = programs {
                t.regions.extend(regions);
                t.spaces = spaces;
            }
            t
        }
    };
    transform.regions = disjoint(std::mem::take(&mut transform.regions));
    Some(transform)
}

/// The regions sorted by start, each that overlaps one before it left out.
fn disjoint(mut regions: Regions) -> Regions {
    regions.sort_by_key(|(r, _)| r.start);
    let mut out: Regions = Vec::with_capacity(regions.len());
    for r in regions {
        if out.last().is_none_or(|prev| prev.0.end <= r.0.start) {
            out.push(r);
        }
    }
    out
}

/// Learns the kernel modules' renumbering. `None` when there is nothing to
/// renumber.
fn learn_modules(
    old: Input<'_>,
    new: Input<'_>,
    old_mods: &[Module<'_>],
    new_mods: &[Module<'_>],
    own_maps: bool,
) -> Option<SourceTransform> {
    if old_mods.is_empty() || new_mods.is_empty() {
        return None;
    }
    let old_by_name = by_name(old_mods);
    let mut pairs: Vec<(&Module<'_>, &Module<'_>)> = by_name(new_mods)
        .into_iter()
        .filter_map(|(name, b)| Some(((*old_by_name.get(name)?)?, b?)))
        .collect();
    // Learning holds a few bytes per BTF byte it reads: the pairs first in the old
    // image, up to a bounded amount of BTF, teach (an image with more modules
    // than that learns from a prefix, the same one whatever the thread count).
    pairs.sort_unstable_by_key(|(o, _)| o.btf.start);
    let mut read = 0u64;
    let within = pairs
        .iter()
        .take_while(|(o, n)| {
            read += (o.btf.end - o.btf.start) + (n.btf.end - n.btf.start);
            read <= MAX_LEARN_BTF
        })
        .count();
    pairs.truncate(within);
    let votes = timed("learn: votes", || {
        pairs
            .par_iter()
            .fold(Votes::default, |mut votes, (o, n)| {
                vote(slice(old.data, &o.btf), slice(new.data, &n.btf), &mut votes);
                if let (Some(a), Some(b)) = (&o.versions, &n.versions) {
                    vote_crcs(slice(old.data, a), slice(new.data, b), &mut votes[2]);
                }
                votes
            })
            .reduce(Votes::default, |mut a, b| {
                for (into, from) in a.iter_mut().zip(b) {
                    into.extend(from);
                }
                a
            })
    });
    let [types, strings, crc_votes] = votes;
    let (types, strings) = timed("learn: elect", || (elect(types), elect(strings)));
    let (ob, nb) = timed("learn: bases", || {
        (
            bases(&blobs(old.data, old_mods)),
            bases(&blobs(new.data, new_mods)),
        )
    });
    let mut local: HashMap<u64, RegionKind> = timed("learn: own maps", || {
        pairs
            .par_iter()
            .filter(|_| own_maps)
            .filter_map(|(o, n)| {
                let (before, after) = (slice(old.data, &o.btf), slice(new.data, &n.btf));
                // Most modules come out equal under the global maps alone.
                if before.len() == after.len() {
                    let mut mapped = before.to_vec();
                    let global = btf::rewrite(&mut mapped, |what, v| match what {
                        btf::Ref::Type => types.map(v),
                        btf::Ref::Str => strings.map(v),
                    });
                    if global.is_ok() && mapped == after {
                        return None;
                    }
                }
                let (t, s) = local_maps(before, after, ob, nb, (&types, &strings));
                (!t.0.is_empty() || !s.0.is_empty()).then(|| {
                    let kind = RegionKind::Btf {
                        types: t,
                        strings: s,
                    };
                    (o.btf.start, kind)
                })
            })
            .collect()
    });
    let mut regions: Vec<(Range<u64>, RegionKind)> = timed("learn: find BTF", || btf_blobs(old))
        .into_iter()
        .map(|r| {
            let kind = local.remove(&r.start).unwrap_or_else(RegionKind::btf);
            (r, kind)
        })
        .collect();
    regions.extend(
        old_mods
            .iter()
            .filter_map(|m| Some((m.versions.clone()?, RegionKind::ModVersions))),
    );
    let transform = SourceTransform {
        regions: disjoint(regions),
        types,
        strings,
        crcs: ExactMap(timed("learn: CRC majority", || majority(crc_votes))),
        spaces: Vec::new(),
    };
    let own_maps = transform
        .regions
        .iter()
        .any(|(_, k)| matches!(k, RegionKind::Btf { types, strings } if !types.0.is_empty() || !strings.0.is_empty()));
    if transform.types.0.is_empty()
        && transform.strings.0.is_empty()
        && transform.crcs.0.is_empty()
        && !own_maps
    {
        return None;
    }
    Some(transform)
}

/// Rewrites the regions of `transform` in `copy`, a writable copy of `old`, in
/// parallel; returns the transform keeping only the regions that changed, `None`
/// if none did.
pub(crate) fn rewrite_copy(
    copy: &mut [u8],
    old: &[u8],
    mut transform: SourceTransform,
) -> Option<SourceTransform> {
    let mut slices: Vec<&mut [u8]> = Vec::with_capacity(transform.regions.len());
    let (mut rest, mut at): (&mut [u8], u64) = (copy, 0);
    for (r, _) in &transform.regions {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut((r.start - at) as usize);
        let (region, tail) = tail.split_at_mut((r.end - r.start) as usize);
        slices.push(region);
        (rest, at) = (tail, r.end);
    }
    let changed: Vec<bool> = slices
        .into_par_iter()
        .zip(&transform.regions)
        .map(|(dst, (r, kind))| {
            let plain = &old[r.start as usize..r.end as usize];
            // Writing the pages before anything reads them makes each a single
            // copy-on-write fault; a page read first is mapped shared and then
            // replaced, which costs every thread a TLB flush.
            dst.copy_from_slice(plain);
            let ok = transform.rewrite(dst, kind).is_ok();
            if !ok {
                // Dropped below: the view must keep its plain bytes.
                dst.copy_from_slice(plain);
            }
            ok && dst != plain
        })
        .collect();
    let mut keep = changed.into_iter();
    transform.regions.retain(|_| keep.next().unwrap_or(false));
    transform.drop_unused_spaces();
    (!transform.regions.is_empty()).then_some(transform)
}

/// The rewritten regions of `old` under `transform`, keeping only the regions that
/// change; `None` if none does.
pub(crate) fn overlay(old: &[u8], mut transform: SourceTransform) -> Option<Overlay> {
    let rewritten: Vec<Option<Vec<u8>>> = transform
        .regions
        .par_iter()
        .map(|(r, kind)| {
            let plain = &old[r.start as usize..r.end as usize];
            let mut bytes = plain.to_vec();
            let changed = transform.rewrite(&mut bytes, kind).is_ok() && bytes != plain;
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
    transform.drop_unused_spaces();
    Some(Overlay {
        transform,
        rewritten: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_offset_in_the_table_is_first_once() {
        let mut seen = Offsets::new(130);
        for at in [0, 63, 64, 129] {
            assert!(seen.first(at), "{at} is new");
        }
        for at in [0, 63, 64, 129] {
            assert!(!seen.first(at), "{at} was seen");
        }
        assert!(seen.first(1) && seen.first(128));
        // Past the table (and its last word): never a string.
        assert!(!seen.first(192));
        assert!(!seen.first(u32::MAX));
    }

    /// The pairing `pair_in_order` replaced: a queue of new indexes per key, each
    /// old record in order taking the front of its key's queue.
    fn pair_by_queues(old: &[u64], new: &[u64]) -> Vec<(u32, u32)> {
        let mut queues: HashMap<u64, std::collections::VecDeque<u32>> = HashMap::new();
        for (j, k) in new.iter().enumerate() {
            queues.entry(*k).or_default().push_back(j as u32);
        }
        old.iter()
            .enumerate()
            .filter_map(|(i, k)| Some((i as u32, queues.get_mut(k)?.pop_front()?)))
            .collect()
    }

    #[test]
    fn equal_keys_pair_in_order_as_queues_pair_them() {
        // Few distinct keys, so most keys repeat on both sides, in different counts.
        let keys = |seed: u64, n: usize| -> Vec<u64> {
            deltaward_testkit::noise(n, seed)
                .iter()
                .map(|&b| u64::from(b % 13))
                .collect()
        };
        for (a, b) in [(0, 0), (1, 0), (0, 1), (50, 70), (300, 200), (1000, 1000)] {
            let (old, new) = (keys(a as u64 + 1, a), keys(b as u64 + 7, b));
            assert_eq!(
                pair_in_order(&old, &new),
                pair_by_queues(&old, &new),
                "{a} {b}"
            );
        }
        // Keys repeated on one side only pair once each.
        assert_eq!(pair_in_order(&[5, 5, 5], &[5]), vec![(0, 0)]);
        assert_eq!(
            pair_in_order(&[9, 5, 5], &[5, 5, 9]),
            vec![(0, 2), (1, 0), (2, 1)]
        );
    }
}
