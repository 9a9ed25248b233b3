//! Effort levels and the tuning table behind them: which coders run, at which zstd
//! levels, with which windows and frame lengths.

use crate::{codec::bsdiff::MatchFinder, format, transform::Learning};

/// How hard the diff works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Level {
    /// zstd first, the bsdiff-style coder where zstd did poorly, or alone where
    /// the frame's anchors say its code moved; small windows; the source
    /// transform renumbers kernel modules but learns no programs' address maps:
    /// the fastest diff.
    Fast,
    /// The bsdiff-style coder, and zstd where bsdiff leaves between an eighth and a
    /// third of the frame; the smaller payload per frame. Frames whose bytes look
    /// incompressible (compressed data) go to zstd first, as at `Fast`.
    #[default]
    Default,
    /// Both coders at high effort and larger windows: the smallest patch.
    Best,
}

impl Level {
    /// The level's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Default => "default",
            Self::Best => "best",
        }
    }
}

/// Options for [`Patch::build`].
///
/// Defaults: level [`Level::Default`], 4 KiB blocks, a 2 GiB memory limit for the
/// encoders running at once, and the level's window and frame sizes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildOptions {
    /// Effort level.
    pub level: Level,
    /// Block size of the old image's block index (power of two, 512 B to 1 MiB).
    pub block_size: u32,
    /// Upper bound on the memory of frame encoders running at once.
    pub memory_limit: u64,
    /// Largest reference window per frame (also bounds the applier's memory).
    pub max_window: Option<u64>,
    /// Largest output of one delta frame.
    pub frame_len: Option<u64>,
    /// Whether the diff may use a source transform (renumbering kernel modules'
    /// BTF; see `engine/FORMAT.md`). Patches with one need a reader of this version.
    pub transform: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            level: Level::Default,
            block_size: 4096,
            memory_limit: 2 << 30,
            max_window: None,
            frame_len: None,
            transform: true,
        }
    }
}

impl BuildOptions {
    /// Sets the level.
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }
    /// Sets the block size.
    pub fn block_size(mut self, block_size: u32) -> Self {
        self.block_size = block_size;
        self
    }
    /// Sets the encoders' memory limit.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = bytes;
        self
    }
    /// Caps the reference window per frame.
    pub fn max_window(mut self, bytes: u64) -> Self {
        self.max_window = Some(bytes);
        self
    }
    /// Caps the output length of one delta frame.
    pub fn frame_len(mut self, bytes: u64) -> Self {
        self.frame_len = Some(bytes);
        self
    }

    /// Allows or forbids a source transform.
    pub fn transform(mut self, on: bool) -> Self {
        self.transform = on;
        self
    }

    pub(crate) fn params(&self) -> LevelParams {
        let mut p = match self.level {
            Level::Fast => LevelParams {
                // zstd 2 rather than 3 (3 alternating rounds): CPU time -9 % on
                // kernel-ext4, -7 % on kernel-tar, -4 to -6 % on the qemu pairs;
                // patches -0.6 % (kernel-ext4), -0.2 % (kernel-tar), -1.3 %
                // (qemu-arm64: bsdiff takes more of the frames zstd leaves), +0.3 %
                // (qemu-ext4), +3.1 % (qemu-x86), vmlinuz the same.
                zstd_level: 2,
                long_distance: true,
                // bsdiff only where zstd leaves at least a sixteenth of the frame
                // and at most a quarter (relocated code, mostly): on qemu-x86 the
                // patch is half as large (1,580,709 -> 798,357 bytes, 0.67 x zstd
                // -19's, was 1.33 x), on kernel-ext4 2 % smaller; bsdiff on every
                // frame cost 45 to 70 % more CPU time on the kernel pairs. Above a
                // quarter (the compressed kernel, new files) bsdiff saved nothing
                // in the traces and doubled the time on vmlinuz.
                bsdiff: true,
                bsdiff_zstd_level: 3,
                // One gram in 16 (3 alternating rounds against one in 8, now that
                // bsdiff runs first on moved frames): kernel-tar -6.3 % CPU and
                // wall, +1.5 % bytes; kernel-ext4 -4.5 %, +1.5 %; the qemu pairs
                // within the noise. One in 32: -7.7 % CPU and +3.1 % bytes.
                match_finder: MatchFinder::SparseHashChain,
                zstd_first: true,
                // zstd runs first on every frame here already.
                dense_zstd_level: None,
                retry_ratio: 16,
                retry_ceiling: Some(NEW_DATA_CEILING),
                // Own maps: on kernel-ext4, 0.15 s more diff for 4 % smaller patches.
                // Programs' address maps: learning them, rewriting the old programs
                // and indexing them again took 40 % of the CPU time on qemu-x86, for
                // 28 % smaller patches (see BENCHMARKS.md, seventeenth round).
                learning: Learning {
                    own_maps: false,
                    programs: false,
                },
                // The tables of kernel-tar at `fast`: 143,512 bytes at zstd 3 in
                // 4 ms, 142,043 at 19 in 26 ms.
                transform_zstd_level: 3,
                max_window: 16 << 20,
                frame_len: 4 << 20,
            },
            Level::Default => LevelParams {
                zstd_level: 6,
                long_distance: true,
                bsdiff: true,
                // The bsdiff streams are a tenth of the frame once the add bytes are
                // runs: zstd 5 on them costs no measurable time over 3 (kernel-ext4,
                // kernel-tar, 3 alternating rounds) for 3.4 % smaller patches on
                // qemu-x86, 0.55 % on kernel-ext4, 0.14 % on kernel-tar.
                bsdiff_zstd_level: 5,
                match_finder: MatchFinder::HashChain,
                zstd_first: false,
                // vmlinuz: 0.40 to 0.67 s -> 0.09 s (bsdiff found nothing there),
                // +1,201 bytes (0.015 %); zstd 6 would save 182 bytes more for 3 x
                // the time of zstd 3.
                dense_zstd_level: Some(3),
                // zstd where bsdiff left at least an eighth (a twelfth before, 5
                // alternating rounds): the same patches on every pair, CPU time
                // kernel-tar -3.7 %, kernel-ext4 -2.4 %, qemu-ext4 -6.7 %. zstd 6 had
                // won only where bsdiff left 0.125 to 0.19 of the frame, and lost on
                // all six frames between a twelfth and an eighth (bsdiff 0.084 to
                // 0.102, zstd 0.108 to 0.145). In the twelfth round an eighth cost
                // qemu-arm64 4.9 %; its frames have left less than a twelfth since
                // the rewritten programs' anchors.
                retry_ratio: 8,
                // zstd not where bsdiff left more than a third: in the traces of
                // kernel-ext4, kernel-tar and shifted-ext4 (new pair), zstd was
                // never smaller on the eight such frames (0.37 to 0.94 of the
                // frame: zstd 229 to 14,964 bytes larger), and it won only where
                // bsdiff left 0.12 to 0.21 of the frame. Same patches, a zstd 6 run
                // of 3 to 4 MB less per such frame.
                retry_ceiling: Some(3),
                learning: Learning::ALL,
                // The tables of kernel-tar (654 KB with own maps): 445,964 bytes at
                // zstd 6 in 14 ms, 435,917 at 19 in 141 ms; kernel-ext4 (307 KB)
                // 198,628 and 193,189 bytes, 9 and 63 ms. 10 KB (0.05 %) of patch
                // for 3 % of the CPU time (5 alternating rounds against 19: kernel-tar
                // -3.1 % CPU, +0.05 % bytes; kernel-ext4 -2.2 %, +0.02 %).
                transform_zstd_level: 6,
                max_window: 32 << 20,
                frame_len: 4 << 20,
            },
            Level::Best => LevelParams {
                zstd_level: 19,
                long_distance: true,
                bsdiff: true,
                bsdiff_zstd_level: 19,
                match_finder: MatchFinder::SuffixArray,
                // zstd 19 (0.7 MiB/s) runs only where bsdiff leaves more than a
                // twelfth of the frame: on kernel-ext4 that is 3x faster than
                // running it on every frame, for +0.05 % patch size.
                zstd_first: false,
                // Not at best: bsdiff found 2,298 bytes (0.028 %) more on vmlinuz
                // than zstd 19, for 35 % more time there.
                dense_zstd_level: None,
                retry_ratio: 12,
                retry_ceiling: None,
                learning: Learning::ALL,
                transform_zstd_level: 19,
                max_window: 64 << 20,
                frame_len: 4 << 20,
            },
        };
        if let Some(w) = self.max_window {
            p.max_window = w.min(format::MAX_WINDOW);
        }
        if let Some(f) = self.frame_len {
            p.frame_len = f.clamp(self.block_size as u64, format::MAX_FRAME_LEN);
        }
        p
    }

    /// The options string recorded in the manifest's `options` field:
    /// `level=L block=B window=W frame=F zstd=Z bsdiff=X`, with the window and frame
    /// length in effect (in bytes) and `X` the bsdiff coder's zstd level, or `off`.
    /// Readers display it and never interpret it (see `engine/FORMAT.md`).
    pub fn describe(&self) -> String {
        let p = self.params();
        let mut s = format!(
            "level={} block={} window={} frame={} zstd={} bsdiff={}",
            self.level.name(),
            self.block_size,
            p.max_window,
            p.frame_len,
            p.zstd_level,
            if p.bsdiff {
                p.bsdiff_zstd_level.to_string()
            } else {
                "off".into()
            }
        );
        if !self.transform {
            s.push_str(" transform=off");
        }
        s
    }
}

/// Where the first coder's payload is more than 1/this of the frame, the data is
/// new or incompressible and the other coder did no better in the traces: the
/// retry ceiling of `fast`, and of frames that look incompressible.
pub(crate) const NEW_DATA_CEILING: u64 = 4;

/// Concrete parameters behind a [`Level`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct LevelParams {
    pub(crate) zstd_level: i32,
    pub(crate) long_distance: bool,
    pub(crate) bsdiff: bool,
    pub(crate) bsdiff_zstd_level: i32,
    /// The bsdiff coder's match finder.
    pub(crate) match_finder: MatchFinder,
    /// Which coder runs first, when bsdiff is on: zstd at `fast` (cheaper), bsdiff
    /// at the other levels (usually smaller).
    pub(crate) zstd_first: bool,
    /// Where set, frames that look incompressible (compressed or encrypted data,
    /// see `diff::looks_incompressible`) go to zstd first, at most at this level,
    /// and to bsdiff only within the retry ratio and a ceiling of a quarter.
    pub(crate) dense_zstd_level: Option<i32>,
    /// The other coder also runs when the first one's payload is at least 1/ratio
    /// of the frame; the smaller payload is kept (the first one's on a tie).
    pub(crate) retry_ratio: u64,
    /// And only when it is at most 1/ceiling of the frame, where set: above that the
    /// data is new or incompressible, and neither coder does better.
    pub(crate) retry_ceiling: Option<u64>,
    /// What the source transform learns: maps of their own for modules whose BTF
    /// the new build reordered, the programs' address maps.
    pub(crate) learning: Learning,
    /// zstd level of the source transform's stored tables.
    pub(crate) transform_zstd_level: i32,
    pub(crate) max_window: u64,
    pub(crate) frame_len: u64,
}

impl LevelParams {
    /// Whether frame encoders keep their zstd contexts from one frame to the next.
    /// Not at zstd levels of 16 and above: there a context's tables (about 80 MiB at
    /// level 19 with a 4 MiB frame) are more than the faults they save, and a
    /// permit would hold two of them between frames.
    pub(crate) fn keep_zstd_contexts(&self) -> bool {
        self.zstd_level < 16 && (!self.bsdiff || self.bsdiff_zstd_level < 16)
    }

    /// The longest reference window a frame of this level gets.
    pub(crate) fn frame_window(&self) -> u64 {
        crate::plan::window_cap(self.max_window, self.frame_len)
    }

    /// Rough memory of one frame encoder: zstd's tables over the window, plus the
    /// suffix array and streams of the bsdiff coder. The window is the longest a
    /// frame gets, not `max_window`: at `best` that was 64 MiB against the 8.5 MiB
    /// a 4 MiB frame can have, and the estimate let 3 frames run at once, not 16.
    pub(crate) fn encode_memory(&self) -> u64 {
        let window = self.frame_window();
        let zstd = 3 * (window + self.frame_len);
        let bsdiff = if self.bsdiff {
            5 * window + 3 * self.frame_len
        } else {
            0
        };
        zstd + bsdiff
    }
}
