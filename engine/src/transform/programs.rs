//! The program half of the source transform: x86-64 and AArch64 code, relocation
//! tables and pointers seen with the addresses of the new build.
//!
//! When a new build of a program inserts or removes code, everything after the
//! change moves, and every relative call, jump and RIP-relative load that crosses
//! the change gets a new 32-bit displacement, although the instruction did not
//! change: on the qemu-x86 pair of the benchmarks, 159,000 of the old program's
//! 304,000 displacements. The relocation table (`.rela.dyn`) of a
//! position-independent program lists every pointer the loader fixes up, by
//! address, and all of those move too.
//!
//! The diff learns an *address map* per program, old virtual address to new, from
//! the displacements of the two builds (see [`learn`]); the transform then shows
//! the delta coders the old program with each displacement recomputed between the
//! mapped addresses of its instruction and its target, and each relocation's
//! address (and addend, for relative relocations) mapped. Finding displacements
//! needs no disassembler: [`scan`] takes the x86-64 opcodes that carry one (as
//! Courgette's and Zucchini's rel32 finders do), and [`arm64`] the AArch64
//! branches and page addresses, so they also take some bytes that are not
//! instructions. That is harmless: the applier finds the same bytes in the
//! same old image and rewrites them the same way, and each frame's output hash
//! decides correctness.

use std::ops::Range;

use object::{
    elf::{self, FileHeader64},
    read::elf::{FileHeader as _, ProgramHeader as _, SectionHeader as _},
    LittleEndian,
};
use rayon::prelude::*;

use super::{RegionKind, Regions};
use crate::sparse::Input;

/// Length of one ELF64 RELA entry: offset, info, addend.
pub(crate) const RELA_LEN: usize = 24;
/// Longest code or relocation region the learner lists: the applier holds one
/// region in memory when a window cuts it, and each region restarts the scan.
const PIECE: u64 = 1 << 20;
/// Bytes of context on each side of a displacement that pair it with its
/// counterpart in the other build.
const CONTEXT: usize = 12;
/// Most code bytes (per image) that learning reads, from the programs first in
/// the image: a program has a site every 60 bytes or so (qemu-system-x86_64: 304,000
/// in 5.8 MB), and each takes 24 bytes twice (sorted by key, and a copy to sort
/// from or grouped by program), so 64 MiB of code costs about 110 MB per image.
const MAX_LEARN_CODE: u64 = 64 << 20;
/// Most sections an ELF file may have to be taken for a program.
const MAX_SECTIONS: u64 = 4096;
/// Relocation types whose addend is an address: `R_X86_64_RELATIVE`,
/// `R_X86_64_IRELATIVE`, `R_AARCH64_RELATIVE`, `R_AARCH64_IRELATIVE` (the two
/// machines' numbers do not overlap).
const ADDRESS_ADDENDS: [u32; 4] = [
    elf::R_X86_64_RELATIVE,
    elf::R_X86_64_IRELATIVE,
    elf::R_AARCH64_RELATIVE,
    elf::R_AARCH64_IRELATIVE,
];

/// A piecewise map of 64-bit addresses: each entry `(from, add)` adds `add`
/// (modulo 2^64) to every address from `from` up to the next entry's `from`;
/// addresses below the first entry stay as they are.
///
/// Rewriting a program looks up two addresses per displacement, so the map keeps
/// an index beside its entries: equal buckets, for each the number of entries
/// below it. The buckets are as wide as half the next power of two of the entry
/// count takes to cover all but the lowest and highest sixteenth of the entries
/// (stray samples far away would stretch them: qemu's map has five near 2^64),
/// and there are at most that power of two of them. A lookup searches only its
/// bucket's entries, or those below or above the buckets. The index takes at
/// most 8 bytes per entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressMap {
    entries: Vec<(u64, u64)>,
    /// Where the first bucket starts.
    base: u64,
    /// For each bucket `b`, the number of entries whose `from` is below
    /// `base + (b << shift)`; one more than the buckets. Empty for no index.
    starts: Vec<u32>,
    shift: u32,
}

impl AddressMap {
    /// Builds a map from `(from, add)` entries in strictly increasing `from` order;
    /// `None` if they are not.
    pub fn new(entries: Vec<(u64, u64)>) -> Option<Self> {
        super::keys_increase(&entries).then(|| Self::from_increasing(entries))
    }

    /// Builds a map from entries the caller has checked increase.
    pub(crate) fn from_increasing(entries: Vec<(u64, u64)>) -> Self {
        let trim = entries.len() / 16;
        let span = (entries.get(trim), entries.len().checked_sub(trim + 1));
        let (Some(&(base, _)), Some(&(top, _))) = (span.0, span.1.and_then(|i| entries.get(i)))
        else {
            return Self::default();
        };
        let last = entries.last().map_or(top, |e| e.0);
        // More entries than a u32 counts (64 GiB of them) go without an index.
        let Ok(count) = u32::try_from(entries.len()) else {
            return Self {
                entries,
                ..Self::default()
            };
        };
        let most = u64::from(count).next_power_of_two();
        let bits = 64 - (top - base).leading_zeros();
        // At most 63: with one or two entries 2^63 or more apart, `bits` is 64.
        let shift = bits
            .saturating_sub(most.trailing_zeros().saturating_sub(1))
            .min(63);
        let buckets = (((last - base) >> shift) + 1).min(most);
        let mut starts = Vec::with_capacity(buckets as usize + 1);
        let mut below = 0usize;
        for b in 0..=buckets {
            let edge = u128::from(base) + (u128::from(b) << shift);
            while entries.get(below).is_some_and(|e| u128::from(e.0) < edge) {
                below += 1;
            }
            starts.push(below as u32);
        }
        Self {
            entries,
            base,
            starts,
            shift,
        }
    }

    /// The entries.
    pub fn entries(&self) -> &[(u64, u64)] {
        &self.entries
    }

    /// The image of `v`.
    pub fn map(&self, v: u64) -> u64 {
        self.piece(v).map(v)
    }

    /// The piece that holds `v`.
    fn piece(&self, v: u64) -> Piece {
        // The entries that may be the last at or below `v`: its bucket's, or those
        // below or above the buckets' span (all of them without an index).
        let bucket = |b: u64| -> Option<(usize, usize)> {
            let b = usize::try_from(b).ok()?;
            let first = *self.starts.get(b)?;
            Some((
                first as usize,
                *self.starts.get(b.checked_add(1)?)? as usize,
            ))
        };
        let range = match self.starts.first() {
            None => (0, self.entries.len()),
            Some(&first) if v < self.base => (0, first as usize),
            Some(_) => bucket((v - self.base) >> self.shift).unwrap_or((
                self.starts.last().map_or(0, |&s| s as usize),
                self.entries.len(),
            )),
        };
        let some = self.entries.get(range.0..range.1).unwrap_or(&[]);
        let below = range.0 + some.partition_point(|&(from, _)| from <= v);
        let (from, add) = match below.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(&entry) => entry,
            None => (0, 0),
        };
        Piece {
            from,
            to: self.entries.get(below).map(|e| e.0),
            add,
        }
    }

    /// A lookup that keeps the last piece it found, for walks whose addresses
    /// mostly stay in one piece (an entry every 80 KB or so in qemu's map).
    pub(crate) fn cursor(&self) -> Cursor<'_> {
        Cursor {
            map: self,
            last: Piece {
                from: 1,
                to: Some(0),
                add: 0,
            },
        }
    }
}

/// Addresses from `from` up to `to` (the top of the address space for `None`),
/// which an [`AddressMap`] moves by one amount.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece {
    from: u64,
    to: Option<u64>,
    add: u64,
}

impl Piece {
    fn holds(&self, v: u64) -> bool {
        v >= self.from && self.to.is_none_or(|to| v < to)
    }

    fn map(&self, v: u64) -> u64 {
        v.wrapping_add(self.add)
    }
}

/// [`AddressMap::cursor`].
pub(crate) struct Cursor<'a> {
    map: &'a AddressMap,
    last: Piece,
}

impl Cursor<'_> {
    /// The piece that holds `v`.
    fn piece(&mut self, v: u64) -> Piece {
        if !self.last.holds(v) {
            self.last = self.map.piece(v);
        }
        self.last
    }

    /// The image of `v`.
    pub(crate) fn map(&mut self, v: u64) -> u64 {
        self.piece(v).map(v)
    }
}

/// Walks the rel32 displacements of x86-64 code, left to right, and replaces each
/// with `f(offset, displacement)`. A displacement follows `E8` (call), `E9` (jmp),
/// `0F 80`..`0F 8F` (conditional jumps), `FF 15` and `FF 25` (call and jmp through
/// a RIP-relative pointer), or `48`/`4C` then `89`, `8B` or `8D` with a
/// RIP-relative ModRM byte (mov and lea of 64-bit registers); it is taken when it
/// lies inside `code` and is below 2^24 in magnitude, and the walk goes on after
/// it. The walk reads only bytes at or after the one it is at, so replacing a
/// displacement never changes what the walk finds later.
///
/// About one byte in seven of x86-64 code is one of the six that may start such
/// an instruction, so the walk finds them 64 bytes at a time (a mask the compiler
/// turns into vector compares) and looks only at those.
pub(crate) fn scan(code: &mut [u8], mut f: impl FnMut(usize, i32) -> i32) {
    // Where the walk goes on: past the last field taken.
    let mut from = 0usize;
    for block in (0..code.len()).step_by(64) {
        let mut mask = openers(code.get(block..).unwrap_or(&[]));
        // Bits below `from` are bytes of a field taken, or the walk is past the block.
        mask &= u64::MAX
            .checked_shl(from.saturating_sub(block) as u32)
            .unwrap_or(0);
        while mask != 0 {
            let i = block + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(end) = take(code, i, &mut f) {
                from = end;
                mask &= u64::MAX.checked_shl((end - block) as u32).unwrap_or(0);
            }
        }
    }
}

/// Bit `k` set where byte `k` of the first 64 of `bytes` may start an
/// instruction that [`take`] takes: its opcode, and the byte or two after it
/// (`take` checks exactly; this may set a few more, such as `48 8F 05`). Written
/// without branches so that it compiles to vector compares: a 0 or 1 per byte,
/// then each 8 of those gathered into a byte by one multiply (byte `k` of the
/// word lands on bit `56 + k`, and no other product reaches the top byte).
fn openers(bytes: &[u8]) -> u64 {
    let mut block = [0u8; 66];
    let n = bytes.len().min(66);
    if let (Some(to), Some(from)) = (block.get_mut(..n), bytes.get(..n)) {
        to.copy_from_slice(from);
    }
    let (ops, next, third) = (
        block.get(..64).unwrap_or(&[]),
        block.get(1..65).unwrap_or(&[]),
        block.get(2..66).unwrap_or(&[]),
    );
    let mut flags = [0u8; 64];
    for (flag, ((&op, &b1), &b2)) in flags.iter_mut().zip(ops.iter().zip(next).zip(third)) {
        let call = op & 0xfe == 0xe8;
        let jcc = op == 0x0f && b1 & 0xf0 == 0x80;
        let indirect = op == 0xff && (b1 == 0x15 || b1 == 0x25);
        let mov = op & 0xfb == 0x48 && b1 & 0xf9 == 0x89 && b2 & 0xc7 == 0x05;
        *flag = u8::from(call) | u8::from(jcc) | u8::from(indirect) | u8::from(mov);
    }
    let mut mask = 0u64;
    for (k, word) in flags.chunks_exact(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        mask |= (u64::from_le_bytes(w).wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k);
    }
    mask
}

/// Takes the instruction at `i` if it is one [`scan`] rewrites, whole in `code`,
/// with a displacement below 2^24 in magnitude: replaces that with `f`'s and
/// gives the end of the field.
fn take(code: &mut [u8], i: usize, f: &mut impl FnMut(usize, i32) -> i32) -> Option<usize> {
    let at = match (code.get(i)?, code.get(i + 1)) {
        (0xe8 | 0xe9, _) => i + 1,
        (0x0f, Some(0x80..=0x8f)) | (0xff, Some(0x15 | 0x25)) => i + 2,
        (0x48 | 0x4c, Some(0x89 | 0x8b | 0x8d))
            if code.get(i + 2).is_some_and(|m| m & 0xc7 == 0x05) =>
        {
            i + 3
        }
        _ => return None,
    };
    let field = code.get_mut(at..at + 4)?;
    let disp = i32::from_le_bytes([field[0], field[1], field[2], field[3]]);
    if !(-(1 << 24)..1 << 24).contains(&disp) {
        return None;
    }
    field.copy_from_slice(&f(at, disp).to_le_bytes());
    Some(at + 4)
}

/// Rewrites a code region whose first byte is at virtual address `base`: each
/// displacement becomes the distance between its target and the end of its field,
/// both mapped, when that fits 32 bits.
pub(crate) fn rewrite_code(code: &mut [u8], base: u64, map: &AddressMap) {
    // Fields come in address order, and most targets are near their field.
    let (mut ends, mut targets) = (map.cursor(), map.cursor());
    scan(code, |at, disp| {
        let end = base.wrapping_add(at as u64 + 4);
        let target = end.wrapping_add(disp as i64 as u64);
        let here = ends.piece(end);
        let to = if here.holds(target) {
            here.map(target)
        } else {
            targets.map(target)
        };
        let moved = to.wrapping_sub(here.map(end)) as i64;
        i32::try_from(moved).unwrap_or(disp)
    });
}

/// An AArch64 instruction that holds a PC-relative address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arm64 {
    /// `B` or `BL`: the target is the instruction's address plus this.
    Branch(i64),
    /// `ADRP`: the target page is the instruction's page plus this.
    Page(i64),
}

/// What the AArch64 instruction `w` addresses, if it is `B`, `BL` or `ADRP`.
pub(crate) fn arm64(w: u32) -> Option<Arm64> {
    if w & 0x7c00_0000 == 0x1400_0000 {
        let imm = ((w & 0x03ff_ffff) << 6) as i32 >> 6;
        Some(Arm64::Branch(i64::from(imm) * 4))
    } else if w & 0x9f00_0000 == 0x9000_0000 {
        let imm = (((w >> 5) & 0x7_ffff) << 2 | (w >> 29) & 3) << 11;
        Some(Arm64::Page(i64::from(imm as i32 >> 11) << 12))
    } else {
        None
    }
}

/// `w` (an instruction [`arm64`] recognises) addressing `to` instead, if `to`
/// is a whole number of its units and within its reach.
fn arm64_with(w: u32, to: Arm64) -> Option<u32> {
    match to {
        Arm64::Branch(d) if d % 4 == 0 && (-(1 << 27)..1 << 27).contains(&d) => {
            Some(w & 0xfc00_0000 | (d / 4) as u32 & 0x03ff_ffff)
        }
        Arm64::Page(d) if d % 4096 == 0 && (-(1 << 32)..1 << 32).contains(&d) => {
            let imm = (d >> 12) as u32;
            Some(w & 0x9f00_001f | (imm & 3) << 29 | (imm >> 2 & 0x7_ffff) << 5)
        }
        _ => None,
    }
}

/// Rewrites an AArch64 code region whose first byte is at virtual address `base`:
/// each whole 4-byte word that is `B` or `BL` gets the distance between its
/// mapped target and its mapped address, and each `ADRP` the distance between the
/// page of its mapped target page and its mapped address's page, where they fit.
pub(crate) fn rewrite_arm64(code: &mut [u8], base: u64, map: &AddressMap) {
    let (mut pcs, mut targets) = (map.cursor(), map.cursor());
    for (i, word) in code.chunks_exact_mut(4).enumerate() {
        let w = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        let pc = base.wrapping_add(4 * i as u64);
        let moved = match arm64(w) {
            Some(Arm64::Branch(d)) => {
                let target = pc.wrapping_add(d as u64);
                Arm64::Branch(targets.map(target).wrapping_sub(pcs.map(pc)) as i64)
            }
            Some(Arm64::Page(d)) => {
                let target = (pc & !0xfff).wrapping_add(d as u64);
                let to = targets.map(target) & !0xfff;
                Arm64::Page(to.wrapping_sub(pcs.map(pc) & !0xfff) as i64)
            }
            None => continue,
        };
        if let Some(new) = arm64_with(w, moved) {
            word.copy_from_slice(&new.to_le_bytes());
        }
    }
}

/// Rewrites a relocation region (whole 24-byte entries): each entry's address is
/// mapped, and so is the addend of relative relocations.
pub(crate) fn rewrite_rela(table: &mut [u8], map: &AddressMap) {
    let (mut offsets, mut addends) = (map.cursor(), map.cursor());
    for entry in table.chunks_exact_mut(RELA_LEN) {
        let (offset, rest) = entry.split_at_mut(8);
        let (info, addend) = rest.split_at_mut(8);
        put(offset, offsets.map(get(offset)));
        if ADDRESS_ADDENDS.contains(&(get(info) as u32)) {
            put(addend, addends.map(get(addend)));
        }
    }
}

/// Rewrites a region of pointers: each whole 8-byte word whose value lies in
/// `span` (the program's addresses) goes through the map.
pub(crate) fn rewrite_pointers(words: &mut [u8], span: &Range<u64>, map: &AddressMap) {
    let mut pointers = map.cursor();
    for word in words.chunks_exact_mut(8) {
        let v = get(word);
        if span.contains(&v) {
            put(word, pointers.map(v));
        }
    }
}

fn get(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    u64::from_le_bytes(w)
}

fn put(b: &mut [u8], v: u64) {
    b.copy_from_slice(&v.to_le_bytes());
}

/// The machines whose programs the transform rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Machine {
    X86_64,
    Aarch64,
}

/// An x86-64 or AArch64 program or shared library (ELF `ET_EXEC` or `ET_DYN`) in
/// an image.
#[derive(Debug)]
pub(super) struct Program {
    machine: Machine,
    /// Its executable sections: bytes in the image, and the virtual address of the
    /// first.
    code: Vec<(Range<u64>, u64)>,
    /// Its loaded relocation tables (`.rela.dyn`, `.rela.plt`) in the image.
    rela: Vec<Range<u64>>,
    /// Its loaded writable data (`.data`, `.data.rel.ro`, `.init_array`, ...) in
    /// the image, each starting at an address that is a multiple of 8: where its
    /// pointers are.
    data: Vec<Range<u64>>,
    /// The virtual addresses its loaded segments span.
    span: Range<u64>,
}

/// The program starting at `at`, if one does with its code inside the image. Its
/// end is taken to be its ELF header's: a file system may store a program in
/// pieces, with other files between them, so that its length says nothing about
/// where the next file starts.
pub(super) fn program_at(data: &[u8], at: u64) -> super::learn::Probe<Program> {
    let mut cost = 0;
    let found = parse_program(data, at, &mut cost).map(|p| (p, at + 64));
    super::learn::Probe { found, cost }
}

/// A loaded segment: where its bytes are in the image, and its virtual address.
struct Segment {
    file: Range<u64>,
    vaddr: u64,
    /// Its length in memory.
    size: u64,
    exec: bool,
}

impl Segment {
    /// Whether `file` (image offsets) lies in this segment at virtual address
    /// `vaddr`.
    fn holds(&self, file: &Range<u64>, vaddr: u64) -> bool {
        self.file.start <= file.start
            && file.end <= self.file.end
            && vaddr.wrapping_sub(self.vaddr) == file.start - self.file.start
    }
}

/// The program at `at`: its code from its program headers, which sit beside the
/// ELF header; its executable sections and relocation tables from its section
/// headers where those agree with the program headers. (A file system that stored
/// the program in pieces leaves the section headers, at the file's end, elsewhere:
/// then the code is the executable segments and no relocations are rewritten.)
fn parse_program(data: &[u8], at: u64, cost: &mut u64) -> Option<Program> {
    let file = data.get(at as usize..)?;
    let header = FileHeader64::<LittleEndian>::parse(file).ok()?;
    let endian = header.endian().ok()?;
    let machine = match header.e_machine(endian) {
        elf::EM_X86_64 => Machine::X86_64,
        elf::EM_AARCH64 => Machine::Aarch64,
        _ => return None,
    };
    if !matches!(header.e_type(endian), elf::ET_EXEC | elf::ET_DYN) {
        return None;
    }
    let segments = header.program_headers(endian, file).ok()?;
    *cost = segments.len() as u64 * 56;
    let segments: Vec<Segment> = segments
        .iter()
        .filter(|p| p.p_type(endian) == elf::PT_LOAD && p.p_filesz(endian) > 0)
        .map(|p| {
            let start = at.checked_add(p.p_offset(endian))?;
            let end = start.checked_add(p.p_filesz(endian))?;
            Some(Segment {
                file: start..end.min(data.len() as u64),
                vaddr: p.p_vaddr(endian),
                size: p.p_memsz(endian),
                exec: p.p_flags(endian) & elf::PF_X != 0,
            })
        })
        .collect::<Option<_>>()?;
    let (mut code, mut rela, mut words) = (Vec::new(), Vec::new(), Vec::new());
    let count = header.shnum(endian, file).unwrap_or(0) as u64;
    let sections = (count <= MAX_SECTIONS)
        .then(|| header.sections(endian, file).ok())
        .flatten();
    for s in sections.iter().flat_map(|t| t.iter()) {
        *cost += 64;
        let Some((offset, size)) = s.file_range(endian) else {
            continue;
        };
        let Some(range) = at
            .checked_add(offset)
            .and_then(|start| Some(start..start.checked_add(size)?))
        else {
            continue;
        };
        let vaddr = s.sh_addr(endian);
        let Some(segment) = segments.iter().find(|g| g.holds(&range, vaddr)) else {
            continue;
        };
        let flags = s.sh_flags(endian);
        match s.sh_type(endian) {
            elf::SHT_PROGBITS
                if segment.exec && flags & u64::from(elf::SHF_EXECINSTR) != 0 && size > 0 =>
            {
                code.push((range, vaddr));
            }
            elf::SHT_RELA if s.sh_entsize(endian) == RELA_LEN as u64 && size > 0 => {
                rela.push(range.start..range.end - size % RELA_LEN as u64);
            }
            elf::SHT_PROGBITS
            | elf::SHT_INIT_ARRAY
            | elf::SHT_FINI_ARRAY
            | elf::SHT_PREINIT_ARRAY
                if !segment.exec && flags & u64::from(elf::SHF_WRITE) != 0 =>
            {
                let skip = vaddr.wrapping_neg() % 8;
                if size > skip + 8 {
                    words.push(range.start + skip..range.end);
                }
            }
            _ => {}
        }
    }
    if code.is_empty() {
        code = segments
            .iter()
            .filter(|g| g.exec && g.file.start < g.file.end)
            .map(|g| (g.file.clone(), g.vaddr))
            .collect();
    }
    let span = segments.iter().map(|g| g.vaddr).min().unwrap_or(0)
        ..segments
            .iter()
            .map(|g| g.vaddr.saturating_add(g.size))
            .max()
            .unwrap_or(0);
    (!code.is_empty()).then_some(Program {
        machine,
        code,
        rela,
        data: words,
        span,
    })
}

/// The programs found in an image, in image order, as many as learning reads.
pub(super) fn bounded(mut found: Vec<Program>) -> Vec<Program> {
    found.sort_by_key(|p| p.code.first().map(|c| c.0.start));
    // Learning reads a bounded amount of code: the programs first in the image.
    let mut read = 0u64;
    found
        .into_iter()
        .take_while(|p| {
            read += p.code.iter().map(|c| c.0.end - c.0.start).sum::<u64>();
            read <= MAX_LEARN_CODE
        })
        .collect()
}

/// A displacement as learning sees it: a hash of the code around it with every
/// displacement blanked, the program it is in, the virtual address of the end of
/// its field, and the displacement.
#[derive(Debug, Clone, Copy)]
struct Site {
    key: u64,
    program: u32,
    end: u64,
    disp: i32,
}

impl Site {
    /// The virtual address the displacement reaches.
    fn target(&self) -> u64 {
        self.end.wrapping_add(self.disp as i64 as u64)
    }
}

/// The sites of every program's code, sorted by key (equal keys in any order).
fn sites(data: &[u8], programs: &[Program]) -> Vec<Site> {
    // In the pieces the regions will have, so that a large program's code is
    // scanned in parallel.
    let sections: Vec<(u32, Machine, (Range<u64>, u64))> = programs
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            p.code.iter().flat_map(move |(range, vaddr)| {
                pieces(range, 4).map(move |r| {
                    let base = vaddr.wrapping_add(r.start - range.start);
                    (i as u32, p.machine, (r, base))
                })
            })
        })
        .collect();
    let out: Vec<Site> = sections
        .par_iter()
        .flat_map_iter(|(program, machine, (range, vaddr))| {
            let (program, machine, vaddr) = (*program, *machine, *vaddr);
            let mut blank = data[range.start as usize..range.end as usize].to_vec();
            let found = blank_addresses(machine, &mut blank);
            // x86-64 displacements count from their field's end, AArch64 branches
            // from the instruction.
            let from = match machine {
                Machine::X86_64 => 4,
                Machine::Aarch64 => 0,
            };
            found
                .into_iter()
                .filter_map(|(at, disp)| {
                    let context = blank.get(at.checked_sub(CONTEXT)?..at + 4 + CONTEXT)?;
                    let end = vaddr.wrapping_add(at as u64 + from);
                    Some(Site {
                        key: xxhash_rust::xxh3::xxh3_64(context),
                        program,
                        end,
                        disp,
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // What is learned from the sites depends only on the keys each program (or the
    // whole image) holds once, so equal keys may come in any order.
    sort_bucketed(out, |s| s.key, |s| s.key)
}

/// Sorts `items` by `order`, where `spread` is a number that never decreases
/// along that order (a hash key, an address): one counting pass puts them in
/// about `items / 16` buckets of equal ranges of `spread`, then each bucket is
/// sorted, in parallel. The ranges span the middle 98 % of a sample of the
/// values, and the values outside it go to the first and last bucket, so that a
/// few far outliers (the targets of bytes that only look like a call) do not put
/// the rest in one bucket. Never wrong, whatever the values: skewed ones only make
/// some buckets large. Equal `order` keys end in any order. On qemu-ext4 the
/// comparison sorts of the sites and samples took 15 % of the diff's CPU time.
fn sort_bucketed<T: Copy + Send, K: Ord>(
    mut items: Vec<T>,
    spread: impl Fn(&T) -> u64,
    order: impl Fn(&T) -> K + Sync,
) -> Vec<T> {
    let n = items.len();
    let mut sample: Vec<u64> = items.iter().step_by(n / 1024 + 1).map(&spread).collect();
    sample.sort_unstable();
    let trim = sample.len() / 100;
    let (lo, hi) = match (sample.get(trim), sample.iter().rev().nth(trim)) {
        (Some(&lo), Some(&hi)) if n >= 1 << 12 && lo < hi => (lo, hi),
        _ => {
            items.sort_unstable_by_key(&order);
            return items;
        }
    };
    let bits = (n / 16).ilog2().min(20);
    // The top `bits` bits of the range's offsets choose the bucket.
    let shift = (64 - (hi - lo).leading_zeros()).saturating_sub(bits);
    let bucket = |t: &T| ((spread(t).clamp(lo, hi) - lo) >> shift) as usize;
    let (mut sorted, starts) = scatter(&items, 1 << bits, bucket);
    drop(items);
    let mut buckets = Vec::with_capacity(1 << bits);
    let mut rest = &mut sorted[..];
    for w in starts.windows(2) {
        let (this, tail) = std::mem::take(&mut rest).split_at_mut(w[1] - w[0]);
        buckets.push(this);
        rest = tail;
    }
    buckets
        .into_par_iter()
        .with_min_len(1 << 10)
        .for_each(|b| b.sort_unstable_by_key(&order));
    sorted
}

/// `items` in the order of their buckets (`bucket` gives each one below
/// `buckets`), in their order within a bucket (a counting sort), and where each
/// bucket starts (`buckets + 1` entries, the last the end).
fn scatter<T: Copy>(
    items: &[T],
    buckets: usize,
    bucket: impl Fn(&T) -> usize,
) -> (Vec<T>, Vec<usize>) {
    let mut starts = vec![0usize; buckets + 1];
    for t in items {
        starts[bucket(t) + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    let mut out = items.to_vec();
    let mut next = starts.clone();
    for t in items {
        let at = &mut next[bucket(t)];
        out[*at] = *t;
        *at += 1;
    }
    (out, starts)
}

/// `sites` (sorted by key) regrouped by program, each program's in key order: a
/// stable counting sort. Borrowed as they are when one program has them all.
fn by_program_key(sites: &[Site], count: usize) -> std::borrow::Cow<'_, [Site]> {
    if count <= 1 {
        return std::borrow::Cow::Borrowed(sites);
    }
    std::borrow::Cow::Owned(scatter(sites, count, |s| s.program as usize).0)
}

/// Blanks every address field of `code` (x86-64 displacements; AArch64 branch and
/// page offsets) and returns where those that pair sites are, with their
/// displacement: x86-64's, and AArch64's branches (a page says too little).
fn blank_addresses(machine: Machine, code: &mut [u8]) -> Vec<(usize, i32)> {
    let mut found = Vec::new();
    match machine {
        Machine::X86_64 => scan(code, |at, disp| {
            found.push((at, disp));
            0
        }),
        Machine::Aarch64 => {
            for (i, word) in code.chunks_exact_mut(4).enumerate() {
                let w = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                let blank = match arm64(w) {
                    Some(Arm64::Branch(d)) => {
                        found.push((4 * i, d as i32));
                        w & 0xfc00_0000
                    }
                    Some(Arm64::Page(_)) => w & 0x9f00_001f,
                    None => continue,
                };
                word.copy_from_slice(&blank.to_le_bytes());
            }
        }
    }
    found
}

/// The sites of each program (of `count`), from [`by_program_key`]'s output.
fn by_program(sites: &[Site], count: usize) -> Vec<&[Site]> {
    let mut out = vec![&sites[..0]; count];
    for run in sites.chunk_by(|a, b| a.program == b.program) {
        out[run[0].program as usize] = run;
    }
    out
}

/// The sites (sorted by key) whose key no other site among them has.
fn unique(sites: &[Site]) -> impl Iterator<Item = &Site> {
    sites
        .chunk_by(|a, b| a.key == b.key)
        .filter_map(|run| match run {
            [one] => Some(one),
            _ => None,
        })
}

/// Pairs of sites (old, new) with the same key, each key unique on both sides.
fn pairs<'a>(old: &'a [Site], new: &'a [Site]) -> Vec<(&'a Site, &'a Site)> {
    let mut out = Vec::new();
    let mut new = unique(new).peekable();
    for o in unique(old) {
        while new.next_if(|n| n.key < o.key).is_some() {}
        if let Some(n) = new.next_if(|n| n.key == o.key) {
            out.push((o, n));
        }
    }
    out
}

/// For each key of sorted `(key, value)` pairs, the value it has most often (the
/// smallest on a tie).
fn most_common<K: Eq + Copy, V: Ord + Copy>(
    sorted: &[(K, V)],
) -> impl Iterator<Item = (K, V)> + '_ {
    sorted.chunk_by(|a, b| a.0 == b.0).filter_map(|run| {
        run.chunk_by(|a, b| a.1 == b.1)
            .max_by_key(|same| (same.len(), std::cmp::Reverse(same[0].1)))
            .map(|same| same[0])
    })
}

/// The address map that `(old address, new minus old)` samples elect: each address
/// takes the difference most of its samples give (the smallest on a tie), and the
/// map changes difference only where two addresses in a row agree on the new one,
/// so that one stray sample does not start a piece.
fn elect(samples: Vec<(u64, u64)>) -> AddressMap {
    let samples = sort_bucketed(samples, |s| s.0, |&s| s);
    let points: Vec<(u64, u64)> = most_common(&samples).collect();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (i, &(at, add)) in points.iter().enumerate() {
        let current = out.last().map_or(0, |e| e.1);
        if add != current && points.get(i + 1).is_none_or(|next| next.1 == add) {
            out.push((at, add));
        }
    }
    AddressMap::from_increasing(out)
}

/// Regions of at most [`PIECE`] bytes covering `range`, each a whole number of
/// `unit` bytes but for the last.
fn pieces(range: &Range<u64>, unit: u64) -> impl Iterator<Item = Range<u64>> + '_ {
    let step = PIECE - PIECE % unit;
    (range.start..range.end)
        .step_by(step as usize)
        .map(move |s| s..(s + step).min(range.end))
}

/// Learns the executable transform: the programs of the old image, each paired
/// with the program of the new image that most of its displacements pair with, its
/// address map, and its code, pointer and relocation regions. `None` when no
/// program's addresses moved.
pub(super) fn learn(
    old: Input<'_>,
    new: Input<'_>,
    old_programs: &[Program],
    new_programs: &[Program],
) -> Option<(Regions, Vec<AddressMap>)> {
    if old_programs.is_empty() || new_programs.is_empty() {
        return None;
    }
    let (old_sites, new_sites) = crate::diff::timed("learn: code sites", || {
        rayon::join(
            || sites(old.data, old_programs),
            || sites(new.data, new_programs),
        )
    });
    // Each old program goes with the new program that most of the sites unique in
    // the whole image pair it with (one program on each side, as a bare program
    // is, needs no vote).
    let mut partners: Vec<(u32, u32)> = if old_programs.len() == 1 && new_programs.len() == 1 {
        vec![(0, 0)]
    } else {
        pairs(&old_sites, &new_sites)
            .iter()
            .map(|(o, n)| (o.program, n.program))
            .collect()
    };
    partners.sort_unstable();
    let mut partner: Vec<Option<u32>> = vec![None; old_programs.len()];
    for (o, n) in most_common(&partners) {
        partner[o as usize] = Some(n);
    }
    // Then its sites pair with those of its partner, each key unique in the two
    // programs only: programs built from the same sources (qemu's emulators of
    // each target) share much code, which the whole image holds more than once.
    let (old_grouped, new_grouped) = rayon::join(
        || by_program_key(&old_sites, old_programs.len()),
        || by_program_key(&new_sites, new_programs.len()),
    );
    let (old_each, new_each) = (
        by_program(&old_grouped, old_programs.len()),
        by_program(&new_grouped, new_programs.len()),
    );
    let samples: Vec<Vec<(u64, u64)>> = (0..old_programs.len())
        .into_par_iter()
        .map(|i| {
            let Some(p) = partner[i] else {
                return Vec::new();
            };
            pairs(old_each[i], new_each[p as usize])
                .into_iter()
                .flat_map(|(o, n)| {
                    [
                        (o.end, n.end.wrapping_sub(o.end)),
                        (o.target(), n.target().wrapping_sub(o.target())),
                    ]
                })
                .collect()
        })
        .collect();
    let counts: Vec<usize> = samples.iter().map(Vec::len).collect();
    let maps: Vec<AddressMap> = crate::diff::timed("learn: address maps", || {
        samples.into_par_iter().map(elect).collect()
    });
    let (mut regions, mut spaces) = (Vec::new(), Vec::new());
    for (i, (program, map)) in old_programs.iter().zip(maps).enumerate() {
        tracing::debug!(
            program = i,
            at = program.code.first().map_or(0, |c| c.0.start),
            partner = ?partner[i],
            samples = counts[i],
            entries = map.entries().len(),
            "program address map"
        );
        if map.entries().is_empty() {
            continue;
        }
        let space = spaces.len() as u32;
        for (range, vaddr) in &program.code {
            regions.extend(pieces(range, 4).map(|r| {
                let base = vaddr.wrapping_add(r.start - range.start);
                let kind = match program.machine {
                    Machine::X86_64 => RegionKind::X86Code { space, base },
                    Machine::Aarch64 => RegionKind::Arm64Code { space, base },
                };
                (r, kind)
            }));
        }
        for range in &program.data {
            regions.extend(pieces(range, 8).map(|r| {
                let span = program.span.clone();
                (r, RegionKind::Pointers { space, span })
            }));
        }
        for range in &program.rela {
            regions.extend(pieces(range, RELA_LEN as u64).map(|r| (r, RegionKind::Rela { space })));
        }
        spaces.push(map);
    }
    (!spaces.is_empty()).then_some((regions, spaces))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the values (hashes, clustered addresses with far outliers, all
    /// equal, few), the bucketed sort orders as a comparison sort does.
    #[test]
    fn bucketed_sorts_order_as_comparison_sorts() {
        let words = |n: usize, seed: u64| -> Vec<u64> {
            deltaward_testkit::noise(n * 8, seed)
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("eight bytes")))
                .collect()
        };
        let w = words(200_000, 3);
        let cases: Vec<Vec<(u64, u64)>> = vec![
            // Hash keys, and a second field where keys repeat.
            w.iter().map(|&k| (k, k % 7)).collect(),
            w.iter().map(|&k| (k % 1000, k >> 60)).collect(),
            // Addresses in a program, a few far away, and a bucket-sized cluster.
            w.iter()
                .enumerate()
                .map(|(i, &k)| match i % 500 {
                    0 => (k, 1),
                    1..=30 => (0x40_1000, k % 3),
                    _ => (0x40_0000 + k % 0x100_0000, k % 5),
                })
                .collect(),
            vec![(9, 9); 10_000],
            w.iter().take(5000).map(|&k| (k, 0)).collect(),
            w.iter().take(100).map(|&k| (k, 0)).collect(),
            Vec::new(),
        ];
        for (i, case) in cases.into_iter().enumerate() {
            let mut expected = case.clone();
            expected.sort_unstable();
            let got = sort_bucketed(case, |s| s.0, |&s| s);
            assert!(got == expected, "case {i}");
        }
    }

    /// The walk [`scan`] does, one byte at a time: what it must find.
    fn scan_by_bytes(code: &mut [u8], mut f: impl FnMut(usize, i32) -> i32) {
        let mut i = 0;
        while i < code.len() {
            i = take(code, i, &mut f).unwrap_or(i + 1);
        }
    }

    proptest::proptest! {
        /// The block walk finds and rewrites what a byte-by-byte walk does: bytes
        /// drawn mostly from the openers, their second bytes and RIP-relative
        /// ModRM bytes, with small displacements, so that instructions overlap and
        /// straddle the 64-byte blocks and the end.
        #[test]
        fn the_block_walk_takes_what_a_byte_walk_takes(
            code in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::sample::select(vec![
                        0xe8u8, 0xe9, 0x0f, 0xff, 0x48, 0x4c, 0x85, 0x15, 0x25, 0x8b, 0x8d,
                        0x89, 0x05, 0x0d, 0x00, 0xff,
                    ]),
                    1 => proptest::prelude::any::<u8>(),
                ],
                0..400,
            ),
        ) {
            let mark = |at: usize, disp: i32| disp ^ (at as i32) << 3;
            let (mut a, mut b) = (code.clone(), code);
            let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
            scan(&mut a, |at, d| { seen_a.push((at, d)); mark(at, d) });
            scan_by_bytes(&mut b, |at, d| { seen_b.push((at, d)); mark(at, d) });
            proptest::prop_assert_eq!(seen_a, seen_b);
            proptest::prop_assert_eq!(a, b);
        }
    }

    /// Displacement offsets and values that [`scan`] reports.
    fn found(code: &[u8]) -> Vec<(usize, i32)> {
        let mut out = Vec::new();
        scan(&mut code.to_vec(), |at, disp| {
            out.push((at, disp));
            disp
        });
        out
    }

    #[test]
    fn the_scan_takes_the_opcodes_that_carry_displacements() {
        let code = [
            0x90, 0xe8, 0x10, 0, 0, 0, // call +16
            0xe9, 0xf0, 0xff, 0xff, 0xff, // jmp -16
            0x0f, 0x85, 1, 2, 0, 0, // jne
            0xff, 0x15, 8, 0, 0, 0, // call [rip+8]
            0x48, 0x8d, 0x05, 0, 1, 0, 0, // lea rax, [rip+256]
            0x4c, 0x8b, 0x3d, 4, 0, 0, 0, // mov r15, [rip+4]
            0x48, 0x8b, 0x04, 0x24, // mov rax, [rsp]: not RIP-relative
            0xe8, 0, 0, 0, 0x01, // call with a displacement of 2^24: not taken
            0x0f, 0x7f, // not a conditional jump
            0xe8, 1, 2, // cut short by the end
        ];
        assert_eq!(
            found(&code),
            [
                (2, 16),
                (7, -16),
                (13, 0x201),
                (19, 8),
                (26, 256),
                (33, 4),
                // The rejected call's field is walked byte by byte: its last byte
                // is 0x01, then 0x0f 0x7f, then a cut call.
            ]
        );
        // A displacement field hides the opcodes inside it.
        assert_eq!(
            found(&[0xe8, 0xe8, 0, 0, 0, 0xe8, 0, 0, 0, 0]),
            [(1, 0xe8), (6, 0)]
        );
    }

    #[test]
    fn code_is_rewritten_between_mapped_addresses() {
        // A call at 0x1000 (field end 0x1005) to 0x2000, and one to 0x1800.
        let mut code = vec![0x90u8; 16];
        code[0] = 0xe8;
        code[1..5].copy_from_slice(&(0x2000i32 - 0x1005).to_le_bytes());
        code[8] = 0xe8;
        code[9..13].copy_from_slice(&(0x1800i32 - 0x100d).to_le_bytes());
        // Code from 0x1000 moves up 0x10; from 0x1800 up 0x40; from 0x2000 up 0x100.
        let map = AddressMap::new(vec![(0x1000, 0x10), (0x1800, 0x40), (0x2000, 0x100)])
            .expect("increasing");
        rewrite_code(&mut code, 0x1000, &map);
        assert_eq!(code[1..5], (0x2100i32 - 0x1015).to_le_bytes());
        assert_eq!(code[9..13], (0x1840i32 - 0x101d).to_le_bytes());
        assert_eq!(code[5..8], [0x90; 3]);
    }

    #[test]
    fn relocations_map_addresses_and_relative_addends() {
        let entry = |offset: u64, kind: u64, addend: u64| {
            [
                offset.to_le_bytes(),
                kind.to_le_bytes(),
                addend.to_le_bytes(),
            ]
            .concat()
        };
        let mut table = [
            entry(0x3000, 8, 0x2000),
            entry(0x3008, 5 << 32 | 6, 0x2000),
            entry(0x100, 37, 0x50),
        ]
        .concat();
        let map = AddressMap::new(vec![(0x1000, 0x10), (0x3000, 0x20)]).expect("increasing");
        rewrite_rela(&mut table, &map);
        let want = [
            entry(0x3020, 8, 0x2010),
            // GLOB_DAT: the address moves, the addend is not one.
            entry(0x3028, 5 << 32 | 6, 0x2000),
            // Below the first entry: unchanged.
            entry(0x100, 37, 0x50),
        ]
        .concat();
        assert_eq!(table, want);
    }

    #[test]
    fn pointers_in_the_program_s_span_are_mapped() {
        let words: Vec<u8> = [0x10u64, 0x2000, 0x5000, 0x4fff, 0x2100]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .chain([0xaa, 0xbb, 0xcc]) // a part word, left alone
            .collect();
        let mut rewritten = words.clone();
        let map = AddressMap::new(vec![(0x1000, 0x10), (0x2100, 0x40)]).expect("increasing");
        rewrite_pointers(&mut rewritten, &(0x1000..0x5000), &map);
        let want: Vec<u8> = [0x10u64, 0x2010, 0x5000, 0x503f, 0x2140]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .chain([0xaa, 0xbb, 0xcc])
            .collect();
        assert_eq!(rewritten, want);
    }

    #[test]
    fn arm64_branches_and_pages_are_rewritten_between_mapped_addresses() {
        // bl +0x1000; adrp x0, +2 pages; b -8; add x0, x0, #1 (not an address).
        let words = [
            0x9400_0400u32,
            0x9000_0010 | 0x4000_0000,
            0x17ff_fffe,
            0x9100_0400,
        ];
        assert_eq!(arm64(words[0]), Some(Arm64::Branch(0x1000)));
        assert_eq!(arm64(words[1]), Some(Arm64::Page(0x2000)));
        assert_eq!(arm64(words[2]), Some(Arm64::Branch(-8)));
        assert_eq!(arm64(words[3]), None);
        // Everything from 0x1800 up moved 0x20 later; from 0x3000 up, 0x1000.
        let map = AddressMap::new(vec![(0x1800, 0x20), (0x3000, 0x1000)]).expect("increasing");
        let mut code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        rewrite_arm64(&mut code, 0x1000, &map);
        let got: Vec<Option<Arm64>> = code
            .chunks_exact(4)
            .map(|w| arm64(u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        assert_eq!(
            got,
            [
                // 0x1000 -> 0x2000 became 0x1000 -> 0x2020.
                Some(Arm64::Branch(0x1020)),
                // page 0x1000 -> page 0x3000 became page 0x1000 -> page 0x4000.
                Some(Arm64::Page(0x3000)),
                Some(Arm64::Branch(-8)),
                None,
            ]
        );
        // The registers and the add are untouched.
        assert_eq!(code[4] & 0x1f, 0x10);
        assert_eq!(code[12..16], words[3].to_le_bytes());
    }

    /// The image of `v` by a search of all of `entries`, as the map would give it
    /// without its index.
    fn map_by_search(entries: &[(u64, u64)], v: u64) -> u64 {
        match entries.partition_point(|&(from, _)| from <= v) {
            0 => v,
            i => v.wrapping_add(entries[i - 1].1),
        }
    }

    proptest::proptest! {
        /// The index, and a cursor, find the entry a search of all of them finds:
        /// maps of up to 600 entries, bunched (steps under 2^16) with strays
        /// anywhere up to 2^64 (as qemu's map has; a fuzzer found two entries
        /// 2^63 apart overflowing the bucket shift), looked up at, just below and
        /// just past every entry and at 0, 2^64 - 1 and random addresses. Run in a
        /// debug build too, where an overflowing shift panics.
        #[test]
        fn the_address_index_finds_what_a_full_search_finds(
            steps in proptest::collection::vec(
                proptest::prop_oneof![9 => 1u64..1 << 16, 1 => 1u64..=u64::MAX],
                0..600,
            ),
            start in proptest::prelude::any::<u64>(),
            probes in proptest::collection::vec(proptest::prelude::any::<u64>(), 32),
        ) {
            let mut entries = Vec::new();
            let mut from = Some(start);
            for (k, step) in steps.iter().enumerate() {
                let Some(f) = from else { break };
                entries.push((f, (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
                from = f.checked_add(*step);
            }
            let map = AddressMap::new(entries.clone()).expect("increasing");
            proptest::prop_assert!(map.starts.len() <= 2 * entries.len());
            let near = entries
                .iter()
                .flat_map(|&(f, _)| [f.wrapping_sub(1), f, f.wrapping_add(1)]);
            // A cursor gives the same, whatever piece it last held.
            let mut cursor = map.cursor();
            for v in near.chain([0, u64::MAX]).chain(probes) {
                let want = map_by_search(&entries, v);
                proptest::prop_assert_eq!(map.map(v), want, "at {:#x}", v);
                proptest::prop_assert_eq!(cursor.map(v), want, "cursor at {:#x}", v);
            }
        }
    }

    #[test]
    fn one_stray_sample_does_not_start_a_piece() {
        let map = elect(vec![
            (10, 0),
            (20, 5),
            (20, 5),
            (20, 6),
            (25, 5),
            (30, 7), // stray: the next point disagrees
            (40, 5),
            (50, 5),
            (60, 9),
            (70, 9),
        ]);
        assert_eq!(map.entries(), [(20, 5), (60, 9)]);
        assert_eq!(map.map(15), 15);
        assert_eq!(map.map(35), 40);
        assert_eq!(map.map(u64::MAX), 8);
    }
}
