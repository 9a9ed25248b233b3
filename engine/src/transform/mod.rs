//! Source transforms: a view of the old image in which what a new build renumbers
//! is already renumbered, so that the delta coders see equal bytes.
//!
//! The transform renumbers what Linux kernel modules refer to in their kernel. A
//! kernel update changes the kernel's BTF, and with it the type ids and string
//! offsets by which every module's split BTF refers to the kernel's, and it changes
//! the CRCs of kernel symbols that each module's `__versions` lists: on the Debian
//! 6.1 kernel update of the benchmarks, every one of the 4,022 modules changed in
//! thousands of such fields although their code did not. The diff learns piecewise
//! maps (old type id to new, old string offset to new), maps of their own for
//! modules whose BTF the new build reordered, and an exact map of old CRC to new,
//! from the modules that both images hold; the manifest carries them with the old
//! image's regions (see FORMAT.md, "Source transform"). Delta frames then code the
//! new image against the old one as seen through the maps, and the applier
//! rewrites each window it reads in the same way.
//!
//! It also readdresses x86-64 programs: a new build moves code and data, which
//! changes every relative displacement, relocation and pointer that crosses a
//! move; the diff learns each program's address map and the applier recomputes
//! those fields through it (`x86`).
//!
//! The transform never decides correctness: each frame's output is still checked
//! against its hash, and a wrong map only costs patch size.

pub(crate) mod btf;
mod learn;
mod programs;

use std::ops::Range;

use rayon::prelude::*;

use crate::format::{FormatError, Limit, Region};

pub(crate) use learn::{learn, overlay, rewrite_copy, Learning};
pub use programs::AddressMap;

/// Largest stored (compressed) source transform section.
pub const MAX_TRANSFORM_LEN: u32 = 4 << 20;
/// Largest decoded source transform.
pub const MAX_TRANSFORM_DECODED: u64 = 4 << 20;
/// Largest region a source transform may rewrite (the applier holds one in memory
/// when a window starts or ends inside it).
pub const MAX_REGION_LEN: u64 = 16 << 20;
/// Most regions a transform may list (a kernel image has about 8,000).
pub const MAX_REGIONS: usize = 1 << 18;
/// Most map and CRC entries a transform may hold, all maps together.
pub const MAX_MAP_ENTRIES: usize = 1 << 21;
/// Memory counted per region of a parsed transform (its own maps counted apart).
const REGION_MEMORY: usize = 128;
/// Version byte at the start of the decoded transform.
const VERSION: u8 = 1;
/// zstd level of the stored transform unless the diff's level says otherwise.
const LEVEL: i32 = 19;

/// A piecewise renumbering of 32-bit values: each entry `(from, add)` adds `add`
/// (modulo 2^32) to every value from `from` up to the next entry's `from`; values
/// below the first entry stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remap(Vec<(u32, u32)>, BucketIndex);

/// Where a [`Remap`]'s lookups start: for each bucket of `1 << shift` values, the
/// number of entries before it. Apply looks up every BTF reference of every
/// window, and a binary search over thousands of entries per reference was a
/// tenth of the apply's CPU time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct BucketIndex {
    shift: u32,
    starts: Vec<u32>,
}

/// Most buckets of a [`BucketIndex`].
const MAX_BUCKETS: usize = 1 << 16;

impl BucketIndex {
    fn new(entries: &[(u32, u32)]) -> Self {
        let Some(&(last, _)) = entries.last() else {
            return Self::default();
        };
        let bits = 32 - last.leading_zeros();
        let buckets = (entries.len() * 2).next_power_of_two().min(MAX_BUCKETS);
        let shift = bits.saturating_sub(buckets.trailing_zeros());
        let count = (last >> shift) as usize + 1;
        let mut starts = Vec::with_capacity(count);
        let mut i = 0usize;
        for b in 0..count as u64 {
            while i < entries.len() && u64::from(entries[i].0) < b << shift {
                i += 1;
            }
            starts.push(i as u32);
        }
        Self { shift, starts }
    }
}

impl Remap {
    fn from_sorted(entries: Vec<(u32, u32)>) -> Self {
        let index = BucketIndex::new(&entries);
        Self(entries, index)
    }

    /// The image of `v` under `self` where `self` covers it (from its first entry
    /// up), under `outer` below that.
    fn map_within(&self, outer: &Remap, v: u32) -> u32 {
        match self.0.first() {
            Some(&(from, _)) if v >= from => self.map(v),
            _ => outer.map(v),
        }
    }

    fn put(&self, b: &mut Vec<u8>) {
        varint(b, self.0.len() as u64);
        let (mut from, mut add) = (0u32, 0u32);
        for &(f, a) in &self.0 {
            varint(b, u64::from(f.wrapping_sub(from)));
            varint(b, zigzag(a.wrapping_sub(add) as i32));
            (from, add) = (f, a);
        }
    }

    fn get(r: &mut Varints<'_>) -> Result<Self, FormatError> {
        let bad = FormatError::Inconsistent;
        let count = r.entries(2)?;
        let mut map = Vec::with_capacity(count);
        let (mut from, mut add) = (0u32, 0u32);
        for k in 0..count {
            from = r.next_from(from, k == 0)?;
            let delta = u32::try_from(r.next()?)
                .map_err(|_| bad("source transform map step is too large"))?;
            add = add.wrapping_add(unzigzag(delta) as u32);
            map.push((from, add));
        }
        Ok(Self::from_sorted(map))
    }

    /// Builds a map from `(from, add)` entries in strictly increasing `from` order;
    /// `None` if they are not.
    pub fn new(entries: Vec<(u32, u32)>) -> Option<Self> {
        keys_increase(&entries).then(|| Self::from_sorted(entries))
    }

    /// The entries.
    pub fn entries(&self) -> &[(u32, u32)] {
        &self.0
    }

    /// The image of `v`.
    pub fn map(&self, v: u32) -> u32 {
        let starts = &self.1.starts;
        let bucket = (v >> self.1.shift) as usize;
        // The entries at or below `v` end inside this bucket's range.
        let (lo, hi) = match (starts.get(bucket), starts.get(bucket + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            (Some(&lo), None) => (lo as usize, self.0.len()),
            _ => (self.0.len(), self.0.len()),
        };
        let within = self.0.get(lo..hi).unwrap_or(&[]);
        match lo + within.partition_point(|&(from, _)| from <= v) {
            0 => v,
            i => v.wrapping_add(self.0[i - 1].1),
        }
    }
}

/// Whether the keys of `(key, value)` entries strictly increase, as every map of
/// the transform requires.
pub(crate) fn keys_increase<K: Ord, V>(entries: &[(K, V)]) -> bool {
    entries.windows(2).all(|w| w[0].0 < w[1].0)
}

/// An exact map of 32-bit values: listed values go to their image, every other
/// value stays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExactMap(Vec<(u32, u32)>);

impl ExactMap {
    /// Builds a map from `(from, to)` entries in strictly increasing `from` order;
    /// `None` if they are not.
    pub fn new(entries: Vec<(u32, u32)>) -> Option<Self> {
        keys_increase(&entries).then_some(Self(entries))
    }

    /// The entries.
    pub fn entries(&self) -> &[(u32, u32)] {
        &self.0
    }

    /// The image of `v`.
    pub fn map(&self, v: u32) -> u32 {
        match self.0.binary_search_by_key(&v, |e| e.0) {
            Ok(i) => self.0[i].1,
            Err(_) => v,
        }
    }
}

/// What a region of a source transform holds, and so how it is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionKind {
    /// A BTF blob: its type and string references go through the two remaps, or
    /// through the region's own maps for values from their first entry up (the
    /// module's own types and strings, which a new build may reorder).
    Btf {
        /// This module's type ids, old to new.
        types: Remap,
        /// This module's string offsets, old to new.
        strings: Remap,
    },
    /// A module's `__versions` table: 64-byte entries, each starting with the
    /// symbol's CRC as a little-endian u64, which goes through the CRC map when it
    /// is below 2^32.
    ModVersions,
    /// x86-64 machine code whose first byte is at virtual address `base`: each rel32
    /// displacement is recomputed between the mapped addresses of its field's end
    /// and of its target, through address map `space`.
    X86Code {
        /// The address map, an index into [`SourceTransform::spaces`].
        space: u32,
        /// The virtual address of the region's first byte.
        base: u64,
    },
    /// AArch64 machine code whose first byte is at virtual address `base`: each
    /// `B`, `BL` and `ADRP` is recomputed between mapped addresses through address
    /// map `space`.
    Arm64Code {
        /// The address map, an index into [`SourceTransform::spaces`].
        space: u32,
        /// The virtual address of the region's first byte.
        base: u64,
    },
    /// A relocation table of 24-byte ELF64 RELA entries: each entry's address, and
    /// the addend of relative relocations (x86-64 or AArch64), go through address
    /// map `space`.
    Rela {
        /// The address map, an index into [`SourceTransform::spaces`].
        space: u32,
    },
    /// A 64-bit little-endian program's writable data: each whole 8-byte word
    /// whose value lies in `span` is a pointer and goes through address map
    /// `space`.
    Pointers {
        /// The address map, an index into [`SourceTransform::spaces`].
        space: u32,
        /// The addresses the program spans.
        span: Range<u64>,
    },
}

impl RegionKind {
    /// A BTF region without maps of its own.
    pub fn btf() -> Self {
        Self::Btf {
            types: Remap::default(),
            strings: Remap::default(),
        }
    }

    /// The address map a program's region goes through.
    pub fn space(&self) -> Option<u32> {
        match self {
            Self::X86Code { space, .. }
            | Self::Arm64Code { space, .. }
            | Self::Rela { space }
            | Self::Pointers { space, .. } => Some(*space),
            Self::Btf { .. } | Self::ModVersions => None,
        }
    }
}

/// Length of one `__versions` entry.
const MODVERSION_LEN: usize = 64;

/// Regions of an old image and how each is rewritten.
pub(crate) type Regions = Vec<(Range<u64>, RegionKind)>;

/// A source transform: regions of the old image and the maps that rewrite them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceTransform {
    /// Regions of the old image, sorted and disjoint, each at most
    /// [`MAX_REGION_LEN`] bytes.
    pub regions: Vec<(Range<u64>, RegionKind)>,
    /// Old BTF type id to new.
    pub types: Remap,
    /// Old BTF string offset to new.
    pub strings: Remap,
    /// Old symbol CRC to new.
    pub crcs: ExactMap,
    /// Address maps, old virtual address to new, of the programs whose code and
    /// relocation regions are listed.
    pub spaces: Vec<AddressMap>,
}

impl SourceTransform {
    /// The stored form: one zstd frame (content size set) of the encoding in
    /// FORMAT.md. A transform whose regions are not sorted and disjoint or whose
    /// maps do not increase encodes to bytes that [`parse`](Self::parse) refuses,
    /// as does one past the format's limits: builders check with `parse`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_at(LEVEL)
    }

    /// [`to_bytes`](Self::to_bytes) with the tables compressed at zstd `level`.
    pub(crate) fn to_bytes_at(&self, level: i32) -> Vec<u8> {
        let b = self.tables();
        let settings = crate::codec::ZstdSettings {
            level,
            long_distance: false,
        };
        // Compressing a few hundred kilobytes without a window cannot fail short of
        // allocation failure, which aborts anyway.
        crate::codec::zstd::encode(&[], &b, settings).unwrap_or_default()
    }

    /// The tables that the stored form compresses (`engine/FORMAT.md`).
    pub(crate) fn tables(&self) -> Vec<u8> {
        let mut b = vec![VERSION];
        varint(&mut b, self.regions.len() as u64);
        let mut end = 0;
        for (r, kind) in &self.regions {
            b.push(match kind {
                RegionKind::Btf { .. } => 0,
                RegionKind::ModVersions => 1,
                RegionKind::X86Code { .. } => 2,
                RegionKind::Rela { .. } => 3,
                RegionKind::Pointers { .. } => 4,
                RegionKind::Arm64Code { .. } => 5,
            });
            varint(&mut b, r.start.wrapping_sub(end));
            varint(&mut b, r.end.wrapping_sub(r.start));
            match kind {
                RegionKind::Btf { types, strings } => {
                    types.put(&mut b);
                    strings.put(&mut b);
                }
                RegionKind::ModVersions => {}
                RegionKind::X86Code { space, base } | RegionKind::Arm64Code { space, base } => {
                    varint(&mut b, u64::from(*space));
                    varint(&mut b, *base);
                }
                RegionKind::Rela { space } => varint(&mut b, u64::from(*space)),
                RegionKind::Pointers { space, span } => {
                    varint(&mut b, u64::from(*space));
                    varint(&mut b, span.start);
                    varint(&mut b, span.end.wrapping_sub(span.start));
                }
            }
            end = r.end;
        }
        self.types.put(&mut b);
        self.strings.put(&mut b);
        varint(&mut b, self.crcs.0.len() as u64);
        let mut from = 0u32;
        for &(f, to) in &self.crcs.0 {
            varint(&mut b, u64::from(f.wrapping_sub(from)));
            b.extend_from_slice(&to.to_le_bytes());
            from = f;
        }
        // Only transforms with programs carry address maps, so that the rest keep
        // the encoding that readers before them accept.
        if !self.spaces.is_empty() {
            varint(&mut b, self.spaces.len() as u64);
            for map in &self.spaces {
                varint(&mut b, map.entries().len() as u64);
                let (mut from, mut add) = (0u64, 0u64);
                for &(f, a) in map.entries() {
                    varint(&mut b, f.wrapping_sub(from));
                    varint(&mut b, zigzag64(a.wrapping_sub(add) as i64));
                    (from, add) = (f, a);
                }
            }
        }
        b
    }

    /// Whether a writer may store this transform: its tables parse back against an
    /// old image of `source_size` bytes, and they fit the format's limits even
    /// uncompressed. Cheaper than compressing and parsing the stored form (zstd 19
    /// on the tables took 45 ms on kernel-ext4, once more when the patch is signed).
    pub(crate) fn storable(&self, source_size: u64) -> bool {
        let b = self.tables();
        b.len() as u64 <= MAX_TRANSFORM_DECODED
            && zstd_safe::compress_bound(b.len()) as u64 <= u64::from(MAX_TRANSFORM_LEN)
            && Self::parse_tables(&b, source_size).is_ok()
    }

    /// Parses the stored form against an old image of `source_size` bytes.
    pub fn parse(stored: &[u8], source_size: u64) -> Result<Self, FormatError> {
        let bad = FormatError::Inconsistent;
        let declared = match zstd_safe::get_frame_content_size(stored) {
            Ok(Some(n)) => n,
            _ => {
                return Err(bad(
                    "source transform is not a zstd frame with a content size",
                ))
            }
        };
        if declared > MAX_TRANSFORM_DECODED {
            return Err(FormatError::LimitExceeded {
                limit: Limit::TransformLen,
                value: declared,
                max: MAX_TRANSFORM_DECODED,
            });
        }
        let mut b = vec![0u8; declared as usize];
        crate::codec::zstd::decode(&[], stored, &mut b)
            .map_err(|_| bad("source transform does not decode"))?;
        Self::parse_tables(&b, source_size)
    }

    /// Parses the decoded tables against an old image of `source_size` bytes.
    fn parse_tables(b: &[u8], source_size: u64) -> Result<Self, FormatError> {
        let bad = FormatError::Inconsistent;
        let mut r = Varints {
            b,
            pos: 0,
            entries_left: MAX_MAP_ENTRIES,
        };
        if r.byte()? != VERSION {
            return Err(bad("source transform of an unknown version"));
        }
        let count = r.count(3)?;
        if count > MAX_REGIONS {
            return Err(FormatError::LimitExceeded {
                limit: Limit::TransformLen,
                value: count as u64,
                max: MAX_REGIONS as u64,
            });
        }
        let mut regions = Vec::with_capacity(count);
        let mut end = 0u64;
        for _ in 0..count {
            let kind = r.byte()?;
            let start = end
                .checked_add(r.next()?)
                .ok_or(bad("source transform region overflows"))?;
            let len = r.next()?;
            if len == 0 || len > MAX_REGION_LEN {
                return Err(bad("source transform region is empty or too long"));
            }
            end = start
                .checked_add(len)
                .filter(|&e| e <= source_size)
                .ok_or(bad("source transform region ends past the source image"))?;
            let kind = match kind {
                0 => RegionKind::Btf {
                    types: Remap::get(&mut r)?,
                    strings: Remap::get(&mut r)?,
                },
                1 if len % MODVERSION_LEN as u64 == 0 => RegionKind::ModVersions,
                1 => return Err(bad("__versions region is not whole entries")),
                2 => RegionKind::X86Code {
                    space: r.space()?,
                    base: r.next()?,
                },
                3 if len % programs::RELA_LEN as u64 == 0 => RegionKind::Rela { space: r.space()? },
                3 => return Err(bad("relocation region is not whole entries")),
                4 => {
                    let space = r.space()?;
                    let start = r.next()?;
                    let span = start
                        .checked_add(r.next()?)
                        .map(|end| start..end)
                        .ok_or(bad("source transform pointer span overflows"))?;
                    RegionKind::Pointers { space, span }
                }
                5 => RegionKind::Arm64Code {
                    space: r.space()?,
                    base: r.next()?,
                },
                _ => return Err(bad("source transform region of an unknown kind")),
            };
            regions.push((start..end, kind));
        }
        let maps = [Remap::get(&mut r)?, Remap::get(&mut r)?];
        let count = r.entries(5)?;
        let mut crcs = Vec::with_capacity(count);
        let mut from = 0u32;
        for k in 0..count {
            from = r.next_from(from, k == 0)?;
            let to = [r.byte()?, r.byte()?, r.byte()?, r.byte()?];
            crcs.push((from, u32::from_le_bytes(to)));
        }
        let mut spaces = Vec::new();
        if r.pos != b.len() {
            let count = r.count(1)?;
            if count == 0 {
                return Err(bad("source transform lists no address maps"));
            }
            spaces.reserve(count);
            for _ in 0..count {
                let n = r.entries(2)?;
                let mut map = Vec::with_capacity(n);
                let (mut from, mut add) = (0u64, 0u64);
                for k in 0..n {
                    let step = r.next()?;
                    from = from
                        .checked_add(step)
                        .filter(|_| step > 0 || k == 0)
                        .ok_or(bad("source transform address map is not increasing"))?;
                    add = add.wrapping_add(unzigzag64(r.next()?) as u64);
                    map.push((from, add));
                }
                spaces.push(AddressMap::from_increasing(map));
            }
        }
        let unmapped = regions
            .iter()
            .any(|(_, k)| k.space().is_some_and(|s| s as usize >= spaces.len()));
        if unmapped {
            return Err(bad("source transform region names a missing address map"));
        }
        if r.pos != b.len() {
            return Err(bad("bytes after the source transform"));
        }
        let [types, strings] = maps;
        Ok(Self {
            regions,
            types,
            strings,
            crcs: ExactMap(crcs),
            spaces,
        })
    }

    /// Memory the parsed transform holds.
    pub fn memory(&self) -> u64 {
        let local: usize = self
            .regions
            .iter()
            .map(|(_, k)| match k {
                RegionKind::Btf { types, strings } => types.0.len() + strings.0.len(),
                _ => 0,
            })
            .sum();
        let addresses: usize = self.spaces.iter().map(|m| m.entries().len()).sum();
        (self.regions.len() * REGION_MEMORY
            + (local + self.types.0.len() + self.strings.0.len()) * 24
            + self.crcs.0.len() * 8
            + self.spaces.len() * REGION_MEMORY
            + addresses * 24) as u64
    }

    /// Scratch memory the applier needs for windows that cut a region: the longest
    /// region.
    pub fn scratch_len(&self) -> u64 {
        self.regions
            .iter()
            .map(|(r, _)| r.end.saturating_sub(r.start))
            .max()
            .unwrap_or(0)
    }

    /// Rewrites one region's bytes in place.
    pub(crate) fn rewrite(&self, region: &mut [u8], kind: &RegionKind) -> Result<(), &'static str> {
        match kind {
            RegionKind::Btf { types, strings } => btf::rewrite(region, |what, v| match what {
                btf::Ref::Type => types.map_within(&self.types, v),
                btf::Ref::Str => strings.map_within(&self.strings, v),
            }),
            RegionKind::ModVersions => {
                for entry in region.chunks_exact_mut(MODVERSION_LEN) {
                    let mut crc = [0u8; 8];
                    crc.copy_from_slice(&entry[..8]);
                    if let Ok(v) = u32::try_from(u64::from_le_bytes(crc)) {
                        let to = u64::from(self.crcs.map(v));
                        entry[..8].copy_from_slice(&to.to_le_bytes());
                    }
                }
                Ok(())
            }
            RegionKind::X86Code { space, base } => {
                let map = self.space(*space)?;
                programs::rewrite_code(region, *base, map);
                Ok(())
            }
            RegionKind::Arm64Code { space, base } => {
                let map = self.space(*space)?;
                programs::rewrite_arm64(region, *base, map);
                Ok(())
            }
            RegionKind::Rela { space } => {
                let map = self.space(*space)?;
                programs::rewrite_rela(region, map);
                Ok(())
            }
            RegionKind::Pointers { space, span } => {
                let map = self.space(*space)?;
                programs::rewrite_pointers(region, span, map);
                Ok(())
            }
        }
    }

    /// Leaves out the address maps that no region names (their regions were left
    /// out), renumbering the regions' spaces.
    pub(crate) fn drop_unused_spaces(&mut self) {
        let mut used = vec![false; self.spaces.len()];
        for (_, kind) in &self.regions {
            if let Some(s) = kind.space() {
                if let Some(u) = used.get_mut(s as usize) {
                    *u = true;
                }
            }
        }
        let mut renumber = Vec::with_capacity(used.len());
        let mut next = 0u32;
        for &u in &used {
            renumber.push(next);
            next += u32::from(u);
        }
        for (_, kind) in &mut self.regions {
            match kind {
                RegionKind::X86Code { space, .. }
                | RegionKind::Arm64Code { space, .. }
                | RegionKind::Rela { space }
                | RegionKind::Pointers { space, .. } => {
                    *space = renumber.get(*space as usize).copied().unwrap_or(*space);
                }
                RegionKind::Btf { .. } | RegionKind::ModVersions => {}
            }
        }
        let mut keep = used.into_iter();
        self.spaces.retain(|_| keep.next().unwrap_or(false));
    }

    fn space(&self, space: u32) -> Result<&AddressMap, &'static str> {
        self.spaces
            .get(space as usize)
            .ok_or("region names a missing address map")
    }

    /// The regions that overlap `range`.
    fn overlapping(&self, range: Range<u64>) -> &[(Range<u64>, RegionKind)] {
        let first = self.regions.partition_point(|(r, _)| r.end <= range.start);
        let last = self.regions.partition_point(|(r, _)| r.start < range.end);
        self.regions.get(first..last.max(first)).unwrap_or(&[])
    }

    /// Turns `window`, the old image's bytes at `offset`, into the transformed view.
    /// Regions inside the window are rewritten in place; a region that the window
    /// cuts is read whole into `scratch` (at least [`scratch_len`](Self::scratch_len)
    /// bytes) with `read_at`, rewritten there, and its overlap copied. `cached`
    /// names the region that `scratch` already holds rewritten, if any: the caller
    /// keeps it between windows while `scratch` is left alone, and resets it
    /// otherwise.
    pub(crate) fn apply<E>(
        &self,
        window: &mut [u8],
        offset: u64,
        scratch: &mut [u8],
        cached: &mut Option<usize>,
        mut read_at: impl FnMut(&mut [u8], u64) -> Result<(), E>,
    ) -> Result<(), TransformError<E>> {
        let end = offset + window.len() as u64;
        let first = self.regions.partition_point(|(r, _)| r.end <= offset);
        // Regions inside the window, rewritten in parallel (disjoint slices).
        let mut inside: Vec<(&mut [u8], &RegionKind)> = Vec::new();
        let mut rest: &mut [u8] = window;
        let mut rest_at = offset;
        for (index, (r, kind)) in (first..).zip(self.overlapping(offset..end)) {
            let (lo, hi) = (r.start.max(offset), r.end.min(end));
            let (_, tail) = std::mem::take(&mut rest).split_at_mut((lo - rest_at) as usize);
            let (dst, tail) = tail.split_at_mut((hi - lo) as usize);
            (rest, rest_at) = (tail, hi);
            if lo == r.start && hi == r.end {
                inside.push((dst, kind));
            } else {
                let len = (r.end - r.start) as usize;
                let buf = scratch
                    .get_mut(..len)
                    .ok_or(TransformError::Region("scratch smaller than a region"))?;
                if *cached != Some(index) {
                    *cached = None;
                    read_at(buf, r.start).map_err(TransformError::Read)?;
                    self.rewrite(buf, kind).map_err(TransformError::Region)?;
                    *cached = Some(index);
                }
                let from = (lo - r.start) as usize;
                dst.copy_from_slice(&buf[from..from + dst.len()]);
            }
        }
        inside
            .par_iter_mut()
            .with_min_len(16)
            .try_for_each(|(dst, kind)| self.rewrite(dst, kind))
            .map_err(TransformError::Region)?;
        Ok(())
    }
}

/// Why [`SourceTransform::apply`] failed.
#[derive(Debug)]
pub(crate) enum TransformError<E> {
    /// A region does not walk as BTF.
    Region(&'static str),
    /// Reading a region from the old image failed.
    Read(E),
}

/// An image as seen through a transform, for the diff: the rewritten regions kept
/// beside the original bytes.
pub(crate) struct Overlay {
    pub(crate) transform: SourceTransform,
    /// The rewritten bytes of each region, in region order.
    rewritten: Vec<Vec<u8>>,
}

impl Overlay {
    /// `old[range]` as the transform shows it; borrowed when no region overlaps.
    pub(crate) fn view<'a>(&self, old: &'a [u8], range: Range<u64>) -> std::borrow::Cow<'a, [u8]> {
        let plain = &old[range.start as usize..range.end as usize];
        let first = self
            .transform
            .regions
            .partition_point(|(r, _)| r.end <= range.start);
        let hits = self.transform.overlapping(range.clone());
        if hits.is_empty() {
            return plain.into();
        }
        let mut out = plain.to_vec();
        for ((r, _), bytes) in hits.iter().zip(&self.rewritten[first..]) {
            let (lo, hi) = (r.start.max(range.start), r.end.min(range.end));
            out[(lo - range.start) as usize..(hi - range.start) as usize]
                .copy_from_slice(&bytes[(lo - r.start) as usize..(hi - r.start) as usize]);
        }
        out.into()
    }
}

fn varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn zigzag(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

fn unzigzag(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag64(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Reads the decoded transform.
struct Varints<'a> {
    b: &'a [u8],
    pos: usize,
    /// Map and CRC entries that may still be read ([`MAX_MAP_ENTRIES`] in all).
    entries_left: usize,
}

impl Varints<'_> {
    fn cut() -> FormatError {
        FormatError::Truncated {
            region: Region::Transform,
            offset: 0,
        }
    }

    fn byte(&mut self) -> Result<u8, FormatError> {
        let v = *self.b.get(self.pos).ok_or_else(Self::cut)?;
        self.pos += 1;
        Ok(v)
    }

    /// An unsigned LEB128 varint of at most 10 bytes, in its shortest form.
    fn next(&mut self) -> Result<u64, FormatError> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && byte > 1 {
                break;
            }
            v |= bits << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    break;
                }
                return Ok(v);
            }
        }
        Err(FormatError::Inconsistent(
            "source transform varint is too long or not in its shortest form",
        ))
    }

    /// A count of items that take at least `min_bytes` each: larger than the bytes
    /// left could hold is refused before anything is allocated.
    fn count(&mut self, min_bytes: usize) -> Result<usize, FormatError> {
        let n = self.next()?;
        let left = (self.b.len() - self.pos) as u64;
        if n > left / min_bytes as u64 {
            return Err(Self::cut());
        }
        Ok(n as usize)
    }

    /// The `from` of a map entry: the previous one plus a step that is positive
    /// after the `first` entry, below 2^32.
    fn next_from(&mut self, from: u32, first: bool) -> Result<u32, FormatError> {
        u32::try_from(self.next()?)
            .ok()
            .filter(|&step| step > 0 || first)
            .and_then(|step| from.checked_add(step))
            .ok_or(FormatError::Inconsistent(
                "source transform map is not increasing",
            ))
    }

    /// An address map's index (checked against the maps once they are read).
    fn space(&mut self) -> Result<u32, FormatError> {
        u32::try_from(self.next()?).map_err(|_| {
            FormatError::Inconsistent("source transform address map index is too large")
        })
    }

    /// A count of map entries, within what is left of [`MAX_MAP_ENTRIES`].
    fn entries(&mut self, min_bytes: usize) -> Result<usize, FormatError> {
        let n = self.count(min_bytes)?;
        self.entries_left = self
            .entries_left
            .checked_sub(n)
            .ok_or(FormatError::LimitExceeded {
                limit: Limit::TransformLen,
                value: n as u64,
                max: MAX_MAP_ENTRIES as u64,
            })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SourceTransform {
        SourceTransform {
            regions: vec![
                (100..400, RegionKind::btf()),
                (4096..4160, RegionKind::ModVersions),
                (
                    4160..4200,
                    RegionKind::X86Code {
                        space: 1,
                        base: u64::MAX - 3,
                    },
                ),
                (4200..4248, RegionKind::Rela { space: 0 }),
                (
                    4248..4300,
                    RegionKind::Pointers {
                        space: 1,
                        span: 5..u64::MAX,
                    },
                ),
                (9000..9500, RegionKind::btf()),
            ],
            types: Remap::new(vec![(0, 0), (10, u32::MAX - 2), (100_000, 5)])
                .expect("sample is valid"),
            strings: Remap::new(vec![(7, 15), (1 << 31, 0)]).expect("sample is valid"),
            crcs: ExactMap::new(vec![(0, 1), (0xdead_beef, 0x1234_5678), (u32::MAX, 0)])
                .expect("sample is valid"),
            spaces: vec![
                AddressMap::new(vec![(0, 1), (1 << 40, u64::MAX), (u64::MAX, 7)])
                    .expect("sample is valid"),
                AddressMap::default(),
            ],
        }
    }

    #[test]
    fn address_maps_no_region_names_are_dropped() {
        let map = |add| AddressMap::new(vec![(0, add)]).expect("sorted");
        let mut t = SourceTransform {
            regions: vec![
                (0..8, RegionKind::Rela { space: 2 }),
                (8..9, RegionKind::ModVersions),
                (9..10, RegionKind::X86Code { space: 0, base: 0 }),
            ],
            spaces: vec![map(1), map(2), map(3)],
            ..Default::default()
        };
        t.drop_unused_spaces();
        assert_eq!(t.spaces, [map(1), map(3)]);
        let spaces: Vec<Option<u32>> = t.regions.iter().map(|(_, k)| k.space()).collect();
        assert_eq!(spaces, [Some(1), None, Some(0)]);
    }

    #[test]
    fn remap_is_piecewise() {
        let m = Remap::new(vec![(10, 5), (20, u32::MAX)]).expect("sample is valid");
        assert_eq!(m.map(0), 0);
        assert_eq!(m.map(9), 9);
        assert_eq!(m.map(10), 15);
        assert_eq!(m.map(19), 24);
        assert_eq!(m.map(20), 19);
        assert_eq!(m.map(0), 0);
        assert!(Remap::new(vec![(3, 0), (3, 1)]).is_none());
    }

    #[test]
    fn bucketed_lookup_agrees_with_a_plain_search() {
        let mut next = deltaward_testkit::xorshift(0x2545_f491_4f6c_dd1d);
        for n in [1usize, 2, 3, 17, 1000, 40_000] {
            let spread = [100u64, 1 << 20, 1 << 32];
            for max in spread {
                let mut froms: Vec<u32> = (0..n).map(|_| (next() % max) as u32).collect();
                froms.sort_unstable();
                froms.dedup();
                let entries: Vec<(u32, u32)> = froms.iter().map(|&f| (f, next() as u32)).collect();
                let m = Remap::new(entries.clone()).expect("sorted");
                assert!(m.1.starts.len() <= MAX_BUCKETS);
                let plain = |v: u32| match entries.partition_point(|&(f, _)| f <= v) {
                    0 => v,
                    i => v.wrapping_add(entries[i - 1].1),
                };
                let edges = froms
                    .iter()
                    .flat_map(|&f| [f.wrapping_sub(1), f, f.wrapping_add(1)]);
                for v in edges
                    .chain((0..2000).map(|_| next() as u32))
                    .chain([0, u32::MAX])
                {
                    assert_eq!(m.map(v), plain(v), "n={n} max={max} v={v}");
                }
            }
        }
    }

    #[test]
    fn round_trips() {
        let t = sample();
        let stored = t.to_bytes();
        assert_eq!(
            SourceTransform::parse(&stored, 10_000).expect("sample is valid"),
            t
        );
        // The same regions in a smaller image do not fit.
        assert!(SourceTransform::parse(&stored, 9_499).is_err());
    }

    /// Stores a hand-made decoded transform.
    fn stored(decoded: &[u8]) -> Vec<u8> {
        let s = crate::codec::ZstdSettings {
            level: 3,
            long_distance: false,
        };
        crate::codec::zstd::encode(&[], decoded, s).expect("sample is valid")
    }

    #[test]
    fn malformed_transforms_are_refused() {
        let cases: [(&str, &[u8]); 18] = [
            ("unknown version", &[2, 0, 0, 0, 0]),
            ("empty region", &[1, 1, 0, 5, 0, 0, 0, 0]),
            ("unknown region kind", &[1, 1, 6, 5, 1, 0, 0, 0]),
            (
                "code region without address maps",
                &[1, 1, 2, 5, 1, 0, 0, 0, 0, 0],
            ),
            (
                "code region naming a missing map",
                &[1, 1, 2, 5, 1, 1, 0, 0, 0, 0, 1, 0],
            ),
            (
                "partial relocation entry",
                &[1, 1, 3, 0, 23, 0, 0, 0, 0, 1, 0],
            ),
            ("no address maps after the CRC map", &[1, 0, 0, 0, 0, 0]),
            (
                "pointer span past 2^64",
                &[
                    1, 1, 4, 0, 8, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                    0x01, 0, 0, 0, 1, 0,
                ],
            ),
            (
                "address map not increasing",
                &[1, 0, 0, 0, 0, 1, 2, 5, 0, 0, 0],
            ),
            (
                "address map past 2^64",
                &[
                    1, 0, 0, 0, 0, 1, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                    0x01, 0, 1, 0,
                ],
            ),
            ("partial __versions entry", &[1, 1, 1, 0, 63, 0, 0, 0]),
            ("map not increasing", &[1, 0, 2, 5, 0, 0, 0, 0, 0]),
            (
                "CRC map not increasing",
                &[1, 0, 0, 0, 2, 5, 1, 2, 3, 4, 0, 1, 2, 3, 4],
            ),
            ("cut short", &[1, 3, 0, 1]),
            ("trailing", &[1, 0, 0, 0, 0, 9]),
            ("overlong varint", &[1, 0x80, 0x00, 0, 0, 0]),
            ("count beyond bytes", &[1, 0xff, 0xff, 0x03, 0, 0, 0]),
            (
                "region too long",
                &[1, 1, 0, 0, 0x81, 0x80, 0x80, 0x08, 0, 0, 0],
            ),
        ];
        for (what, decoded) in cases {
            assert!(
                SourceTransform::parse(&stored(decoded), u64::MAX).is_err(),
                "{what} was accepted"
            );
        }
        // The same encoding, well formed, is accepted.
        let good = [1, 2, 0, 5, 3, 0, 0, 1, 0, 64, 1, 2, 4, 0, 1, 7, 1, 2, 3, 4];
        let t = SourceTransform::parse(&stored(&good), 100).expect("well formed");
        assert_eq!(
            t.regions,
            [(5..8, RegionKind::btf()), (8..72, RegionKind::ModVersions)]
        );
        assert_eq!(t.crcs.map(7), 0x0403_0201);
        assert_eq!(t.crcs.map(8), 8);
        // Program regions and their address maps: a code region at 10 (base 0x80),
        // a relocation region after it, and one map of two entries.
        let good = [
            1, 2, 2, 10, 5, 0, 0x80, 0x01, 3, 0, 48, 0, 0, 0, 0, 1, 2, 16, 4, 1, 3,
        ];
        let t = SourceTransform::parse(&stored(&good), 100).expect("well formed");
        assert_eq!(
            t.regions,
            [
                (
                    10..15,
                    RegionKind::X86Code {
                        space: 0,
                        base: 128
                    }
                ),
                (15..63, RegionKind::Rela { space: 0 }),
            ]
        );
        assert_eq!(t.spaces[0].entries(), [(16, 2), (17, 0)]);
        // Not zstd at all, and a frame that declares too much.
        assert!(SourceTransform::parse(b"plain", 100).is_err());
        let big = stored(&vec![0u8; MAX_TRANSFORM_DECODED as usize + 1]);
        assert!(matches!(
            SourceTransform::parse(&big, 100),
            Err(FormatError::LimitExceeded { .. })
        ));
    }

    #[test]
    fn apply_matches_rewriting_whole_regions() {
        let blob = btf::tests::sample();
        let mut old = vec![0xa5u8; 3 * 4096];
        let btf = |at: u64| (at..at + blob.len() as u64, RegionKind::btf());
        // Two __versions entries: a CRC in the map, and one that is not.
        let mut versions = [0u8; 128];
        versions[..8].copy_from_slice(&7u64.to_le_bytes());
        versions[64..72].copy_from_slice(&9u64.to_le_bytes());
        versions[8..14].copy_from_slice(b"printk");
        // Code: calls every 7 bytes, each to the start of the region; and two
        // relative relocations.
        let code: Vec<u8> = (0..100u32)
            .flat_map(|i| {
                let disp = -(i as i32 * 7 + 5);
                [[0xe8u8].as_slice(), &disp.to_le_bytes(), &[0x90, 0x90]].concat()
            })
            .collect();
        let rela: Vec<u8> = [0x9000u64, 8, 0x4000, 0x9008, 8, 0x5000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let code_at = 7000..7000 + code.len() as u64;
        let pointers: Vec<u8> = [0x4000u64, 0x4100, 3]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let regions = [
            btf(100),
            (2000..2128, RegionKind::ModVersions),
            btf(5000),
            (
                code_at.clone(),
                RegionKind::X86Code {
                    space: 0,
                    base: 0x4000,
                },
            ),
            (8000..8048, RegionKind::Rela { space: 0 }),
            (
                8048..8072,
                RegionKind::Pointers {
                    space: 0,
                    span: 0x1000..0x8000,
                },
            ),
        ];
        for (r, kind) in &regions {
            let bytes = match kind {
                RegionKind::Btf { .. } => &blob[..],
                RegionKind::ModVersions => &versions[..],
                RegionKind::X86Code { .. } | RegionKind::Arm64Code { .. } => &code[..],
                RegionKind::Rela { .. } => &rela[..],
                RegionKind::Pointers { .. } => &pointers[..],
            };
            old[r.start as usize..r.end as usize].copy_from_slice(bytes);
        }
        let t = SourceTransform {
            regions: regions.to_vec(),
            crcs: ExactMap::new(vec![(7, 0xfeed)]).expect("sample is valid"),
            types: Remap::new(vec![(100_000, 1000)]).expect("sample is valid"),
            strings: Remap::new(vec![(5, 2)]).expect("sample is valid"),
            // Code from 0x4100 on moves up 16 bytes.
            spaces: vec![AddressMap::new(vec![(0x4100, 16)]).expect("sample is valid")],
        };
        let mut want = old.clone();
        for (r, kind) in &regions {
            t.rewrite(&mut want[r.start as usize..r.end as usize], kind)
                .expect("sample is valid");
        }
        assert_ne!(want, old);
        assert_eq!(want[2000..2008], 0xfeedu64.to_le_bytes());
        assert_eq!(want[2064..2072], 9u64.to_le_bytes());
        // The 40th call (field end 0x4000 + 285, past 0x4100) reaches back 16 more.
        let call = (code_at.start + 7 * 40 + 1) as usize;
        assert_eq!(want[call..call + 4], (-(7 * 40 + 5 + 16i32)).to_le_bytes());
        assert_eq!(want[8000..8008], 0x9010u64.to_le_bytes());
        assert_eq!(want[8040..8048], 0x5010u64.to_le_bytes());
        assert_eq!(want[8056..8064], 0x4110u64.to_le_bytes());
        assert_eq!(want[8064..8072], 3u64.to_le_bytes());
        let overlay = learn::overlay(&old, t.clone()).expect("sample is valid");
        let mut scratch = vec![0u8; t.scratch_len() as usize];
        // Every window that starts and ends on a 4-byte boundary (cutting regions
        // anywhere) sees the same bytes as the whole transformed image.
        for start in (0..old.len()).step_by(52) {
            for len in [1usize, 60, 200, 4000, 9000] {
                let end = (start + len).min(old.len());
                let mut w = old[start..end].to_vec();
                let mut cached = None;
                t.apply(
                    &mut w,
                    start as u64,
                    &mut scratch,
                    &mut cached,
                    |buf, at| {
                        buf.copy_from_slice(&old[at as usize..at as usize + buf.len()]);
                        Ok::<(), ()>(())
                    },
                )
                .expect("sample is valid");
                assert_eq!(w, want[start..end], "window {start}+{len}");
                assert_eq!(
                    &*overlay.view(&old, start as u64..end as u64),
                    &want[start..end]
                );
            }
        }
    }
}
