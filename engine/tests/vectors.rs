//! The format pin, in the manner of BLAKE3's `test_vectors/`: a checked-in table of
//! patch files that the decoder must accept, or refuse with exactly the error kind
//! the table gives. Nothing here runs the encoder, so encoder work never re-blesses
//! the pin.
//!
//! Frozen inputs in `tests/vectors/`: `old.bin` and `new.bin`; `key.key`/`key.pub`,
//! the trusted key pair; `key2.key`/`key2.pub`, a key pair no case trusts; and
//! `patch.dwp`, a valid version 1 patch from `old.bin` to `new.bin` signed by
//! `key.key`, with every frame kind; and for the source transform, `modules-old.bin`
//! and `modules-new.bin` (synthetic kernel modules built against two kernels) with
//! `modules.dwp` between them; and `runs.dwp`, from `old.bin` to `new.bin` with
//! bsdiff-runs frames (kind 4, added to version 1 later); and `programs-old.bin`
//! and `programs-new.bin` (synthetic x86-64 and AArch64 programs and their next builds) with
//! `programs.dwp` between them (transform region kinds 2 to 5 and address maps,
//! added later). They are never regenerated.
//!
//! The table, `cases.txt`, has one case per line: its name, the old image it is
//! applied to, and the expected outcome (`ok`, the output then being `new.bin`, or
//! `X-new.bin` for `X-old.bin`, or an error kind as [`kind`] spells it). Case `NAME` is the file `cases/NAME.dwp`.
//! Every malformed case is derived from `patch.dwp` by a deterministic edit
//! ([`generate`]); cases whose manifest was edited are re-signed with `key.key`, so
//! that they get past the signature check and reach the check they are about.
//! `table_is_current` checks that the table and the files are what the generator
//! makes (a re-signed case's signature excepted: minisign signs with fresh
//! randomness, so those are compared section by section and their signatures
//! verified instead). Regenerate both after changing the generator with
//! `DELTAWARD_BLESS=1 cargo test -p deltaward-engine --test vectors`; re-signed
//! files whose other sections did not change are kept as they are.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use deltaward_testkit as kit;

use deltaward_engine::{
    format::{FRAME_ENTRY_LEN, HEADER_LEN, MANIFEST_FIXED_LEN, MAX_WINDOW},
    generate_keypair, verify_patch, AddressMap, ApplyOptions, Error, FormatError, FrameKind,
    Hashed, Manifest, RegionKind, Remap, SecretKey, Sections, SignatureError, SourceTransform,
    TrustedKeys,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("vector {name}: {e}"))
}

fn read_text(name: &str) -> String {
    String::from_utf8(read(name)).unwrap_or_else(|e| panic!("vector {name}: {e}"))
}

fn trusted(public_key_file: &str) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add_text(&read_text(public_key_file)).expect("public key");
    t
}

fn secret(secret_key_file: &str) -> SecretKey {
    SecretKey::from_text(&read_text(secret_key_file), None).expect("secret key")
}

/// A stable name for the kind of an error, independent of its message:
/// `Format::Truncated::FramePayload`, `Signature::Invalid`, `FrameHash::Output`, ...
fn kind(e: &Error) -> String {
    match e {
        Error::Format(f) => format!(
            "Format::{}",
            match f {
                FormatError::BadMagic => "BadMagic".into(),
                FormatError::UnsupportedVersion { .. } => "UnsupportedVersion".into(),
                FormatError::Truncated { region, .. } => format!("Truncated::{region:?}"),
                FormatError::LimitExceeded { limit, .. } => format!("LimitExceeded::{limit:?}"),
                FormatError::Reserved { .. } => "Reserved".into(),
                FormatError::UnknownFrameKind { .. } => "UnknownFrameKind".into(),
                FormatError::BadFrame { .. } => "BadFrame".into(),
                FormatError::Inconsistent(_) => "Inconsistent".into(),
                FormatError::NotUtf8(_) => "NotUtf8".into(),
                FormatError::TrailingBytes { .. } => "TrailingBytes".into(),
                other => panic!("no kind name for {other:?}: add one"),
            }
        ),
        Error::Signature(s) => format!(
            "Signature::{}",
            match s {
                SignatureError::Unsigned => "Unsigned",
                SignatureError::Malformed => "Malformed",
                SignatureError::Legacy => "Legacy",
                SignatureError::UntrustedKey { .. } => "UntrustedKey",
                SignatureError::Invalid => "Invalid",
                SignatureError::NotCanonical => "NotCanonical",
                SignatureError::CommentMismatch { .. } => "CommentMismatch",
                other => panic!("no kind name for {other:?}: add one"),
            }
        ),
        Error::FrameHash { what, .. } => format!(
            "FrameHash::{}",
            match what {
                Hashed::Payload => "Payload",
                Hashed::Output => "Output",
            }
        ),
        Error::Decode { .. } => "Decode".into(),
        Error::TargetMismatch { .. } => "TargetMismatch".into(),
        Error::SourceMismatch { .. } => "SourceMismatch".into(),
        Error::MemoryLimit { .. } => "MemoryLimit".into(),
        other => panic!("no kind name for {other:?}: add one"),
    }
}

/// Kinds that only checking against the old image can find: `verify_patch` without
/// one accepts such a patch.
fn needs_old_image(kind: &str) -> bool {
    matches!(
        kind,
        "SourceMismatch" | "FrameHash::Output" | "TargetMismatch" | "Decode"
    )
}

/// Who signed a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signer {
    /// Nobody anew: the signature is `patch.dwp`'s (possibly edited) or absent, so
    /// the whole file is deterministic.
    Original,
    /// Re-signed with `key.key`, the trusted key.
    Key,
    /// Signed with `key2.key`, which no case trusts.
    Key2,
}

impl Signer {
    fn public_key_file(self) -> &'static str {
        match self {
            Self::Original | Self::Key => "key.pub",
            Self::Key2 => "key2.pub",
        }
    }
}

/// One row of the table, with the bytes the generator makes for it.
#[derive(Debug)]
struct Case {
    name: &'static str,
    old: &'static str,
    outcome: &'static str,
    signer: Signer,
    bytes: Vec<u8>,
}

/// Derives every case from the frozen `patch.dwp`, in table order.
fn generate() -> Vec<Case> {
    let patch = read("patch.dwp");
    let s = kit::sections(&patch);
    let m = kit::manifest(&patch);
    let key = secret("key.key");
    let key2 = secret("key2.key");
    let first = |kind: FrameKind| {
        m.frames
            .iter()
            .position(|f| f.kind == kind)
            .unwrap_or_else(|| panic!("patch.dwp has no {kind:?} frame"))
    };
    let (zstd, bsdiff) = (first(FrameKind::Zstd), first(FrameKind::Bsdiff));
    let delta = zstd.min(bsdiff);
    // File offset of frame `i`'s payload.
    let payload_at = |i: usize| {
        (s.header.manifest_len + s.header.signature_len) as usize
            + HEADER_LEN
            + m.frames[i].payload_offset as usize
    };
    // Manifest offset of frame entry `i`.
    let entry_at =
        |i: usize| MANIFEST_FIXED_LEN + 4 + m.tool.len() + m.options.len() + FRAME_ENTRY_LEN * i;
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = patch.clone();
        f(&mut b);
        b
    };
    // The manifest bytes `mb` signed by `key` with `comment`, and patch.dwp's payloads.
    let signed = |mb: &[u8], comment: &str, key: &SecretKey| {
        let sig = key.sign(mb, comment).expect("sign");
        Sections::join(mb, sig.as_bytes(), s.payloads)
    };
    let resigned = |f: &dyn Fn(&mut Manifest)| {
        let mut m = m.clone();
        f(&mut m);
        kit::resign(&patch, &m, &key)
    };
    // The manifest bytes with these flags, signed as they are.
    let flagged = |flags: u8| {
        let mut mb = s.manifest.to_vec();
        mb[10] = flags;
        signed(&mb, &m.trusted_comment(), &key)
    };
    let case = |name, old, outcome, signer, bytes| Case {
        name,
        old,
        outcome,
        signer,
        bytes,
    };
    use Signer::{Key, Key2, Original};
    vec![
        case("valid", "old.bin", "ok", Original, patch.clone()),
        case(
            "wrong_old_image",
            "new.bin",
            "SourceMismatch",
            Original,
            patch.clone(),
        ),
        case(
            "bad_magic",
            "old.bin",
            "Format::BadMagic",
            Original,
            edit(&|b| b[0] = b'd'),
        ),
        case(
            "unsupported_version",
            "old.bin",
            "Format::UnsupportedVersion",
            Original,
            edit(&|b| b[8..10].copy_from_slice(&2u16.to_le_bytes())),
        ),
        case(
            "header_reserved_set",
            "old.bin",
            "Format::Reserved",
            Original,
            edit(&|b| b[20] = 1),
        ),
        case(
            "unsigned",
            "old.bin",
            "Signature::Unsigned",
            Original,
            Sections::join(s.manifest, b"", s.payloads),
        ),
        case(
            "manifest_byte_flipped",
            "old.bin",
            "Signature::Invalid",
            Original,
            // A byte of the target hash, signature left as it was.
            edit(&|b| b[HEADER_LEN + 64] ^= 1),
        ),
        case(
            "signature_text_not_canonical",
            "old.bin",
            "Signature::NotCanonical",
            Original,
            {
                let text = std::str::from_utf8(s.signature).expect("utf8");
                let altered = text.replacen("deltaward secret key", "other secret key", 1);
                Sections::join(s.manifest, altered.as_bytes(), s.payloads)
            },
        ),
        case(
            "untrusted_key",
            "old.bin",
            "Signature::UntrustedKey",
            Key2,
            signed(s.manifest, &m.trusted_comment(), &key2),
        ),
        case(
            "trusted_comment_mismatch",
            "old.bin",
            "Signature::CommentMismatch",
            Key,
            {
                let mut other = m.clone();
                other.target_size += 1;
                signed(s.manifest, &other.trusted_comment(), &key)
            },
        ),
        case(
            "truncated_in_payload",
            "old.bin",
            "Format::Truncated::FramePayload",
            Original,
            patch[..payload_at(delta) + m.frames[delta].payload_len as usize / 2].to_vec(),
        ),
        case(
            "trailing_byte",
            "old.bin",
            "Format::TrailingBytes",
            Original,
            edit(&|b| b.push(0)),
        ),
        case(
            "payload_byte_flipped",
            "old.bin",
            "FrameHash::Payload",
            Original,
            edit(&|b| b[payload_at(delta) + m.frames[delta].payload_len as usize / 2] ^= 1),
        ),
        case(
            "header_payload_len_differs",
            "old.bin",
            "Format::Inconsistent",
            Original,
            edit(&|b| {
                b[24..32].copy_from_slice(&(s.header.payload_len + 1).to_le_bytes());
                b.push(0);
            }),
        ),
        case(
            "frame_output_hash_wrong",
            "old.bin",
            "FrameHash::Output",
            Key,
            resigned(&|m| m.frames[bsdiff].output_hash.0[0] ^= 1),
        ),
        case(
            "target_hash_wrong",
            "old.bin",
            "TargetMismatch",
            Key,
            resigned(&|m| m.target_hash.0[0] ^= 1),
        ),
        case(
            "unknown_frame_kind",
            "old.bin",
            "Format::UnknownFrameKind",
            Key,
            {
                // Not expressible as a Manifest: edit the bytes, sign them as they are.
                let mut mb = s.manifest.to_vec();
                mb[entry_at(0)] = 0xff;
                signed(&mb, &m.trusted_comment(), &key)
            },
        ),
        case(
            "gap_between_frames",
            "old.bin",
            "Format::BadFrame",
            Key,
            resigned(&|m| m.frames[1].target_offset += 1),
        ),
        case(
            "max_window_above_limit",
            "old.bin",
            "Format::LimitExceeded::Window",
            Key,
            resigned(&|m| m.max_window = MAX_WINDOW + 1),
        ),
        case(
            "zstd_frame_relabelled_bsdiff",
            "old.bin",
            "Decode",
            Key,
            resigned(&|m| m.frames[zstd].kind = FrameKind::Bsdiff),
        ),
        case(
            "bsdiff_frame_relabelled_zstd",
            "old.bin",
            "Decode",
            Key,
            resigned(&|m| m.frames[bsdiff].kind = FrameKind::Zstd),
        ),
        case(
            "bsdiff_frame_relabelled_runs",
            "old.bin",
            "Decode",
            Key,
            resigned(&|m| m.frames[bsdiff].kind = FrameKind::BsdiffRuns),
        ),
        case(
            "zstd_frame_relabelled_runs",
            "old.bin",
            "Decode",
            Key,
            resigned(&|m| m.frames[zstd].kind = FrameKind::BsdiffRuns),
        ),
        case(
            "payload_lengths_do_not_add_up",
            "old.bin",
            "Format::Inconsistent",
            Key,
            resigned(&|m| m.payload_len += 1),
        ),
        case(
            "manifest_flag_reserved",
            "old.bin",
            "Format::Reserved",
            Key,
            flagged(2),
        ),
        case(
            "transform_flag_without_transform",
            "old.bin",
            "Format::Truncated::Manifest",
            Key,
            flagged(1),
        ),
    ]
    .into_iter()
    .chain(transform_cases())
    .chain(runs_cases())
    .chain(program_cases())
    .collect()
}

/// Cases derived from `runs.dwp`, a patch from `old.bin` to `new.bin` with
/// bsdiff-runs frames (kind 4, added to version 1 after `patch.dwp` was frozen).
fn runs_cases() -> Vec<Case> {
    let patch = read("runs.dwp");
    let m = kit::manifest(&patch);
    let key = secret("key.key");
    let runs = m
        .frames
        .iter()
        .position(|f| f.kind == FrameKind::BsdiffRuns)
        .expect("runs.dwp has a bsdiff-runs frame");
    let resigned = |f: &dyn Fn(&mut Manifest)| {
        let mut m = m.clone();
        f(&mut m);
        kit::resign(&patch, &m, &key)
    };
    let case = |name, outcome, signer, bytes| Case {
        name,
        old: "old.bin",
        outcome,
        signer,
        bytes,
    };
    vec![
        case("runs_valid", "ok", Signer::Original, patch.clone()),
        case(
            "runs_frame_relabelled_bsdiff",
            "Decode",
            Signer::Key,
            resigned(&|m| m.frames[runs].kind = FrameKind::Bsdiff),
        ),
        case(
            "runs_frame_relabelled_zstd",
            "Decode",
            Signer::Key,
            resigned(&|m| m.frames[runs].kind = FrameKind::Zstd),
        ),
        case(
            "runs_frame_output_hash_wrong",
            "FrameHash::Output",
            Signer::Key,
            resigned(&|m| m.frames[runs].output_hash.0[0] ^= 1),
        ),
    ]
}

/// Cases derived from `modules.dwp`, a patch with a source transform (BTF and
/// `__versions` regions of synthetic kernel modules).
fn transform_cases() -> Vec<Case> {
    let patch = read("modules.dwp");
    let s = kit::sections(&patch);
    let m = kit::manifest(&patch);
    let key = secret("key.key");
    let t = m
        .transform
        .clone()
        .expect("modules.dwp has a source transform");
    let resigned = |f: &dyn Fn(&mut Manifest)| {
        let mut m = m.clone();
        f(&mut m);
        kit::resign(&patch, &m, &key)
    };
    // The manifest bytes edited as they are, signed.
    let edited = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut mb = s.manifest.to_vec();
        f(&mut mb);
        let sig = key.sign(&mb, &m.trusted_comment()).expect("sign");
        Sections::join(&mb, sig.as_bytes(), s.payloads)
    };
    let stored_len = t.to_bytes().len();
    let window = m
        .frames
        .iter()
        .find(|f| f.kind.has_payload() && f.source_len > 0)
        .map(|f| f.source_offset)
        .expect("modules.dwp has a delta frame with a window");
    let case = |name, outcome, signer, bytes| Case {
        name,
        old: "modules-old.bin",
        outcome,
        signer,
        bytes,
    };
    vec![
        case("transform_valid", "ok", Signer::Original, patch.clone()),
        case(
            "transform_region_not_btf",
            "Decode",
            Signer::Key,
            resigned(&|m| {
                if let Some(t) = m.transform.as_mut() {
                    t.regions = vec![(window..window + 64, RegionKind::btf())];
                }
            }),
        ),
        case(
            "transform_map_changed",
            "FrameHash::Output",
            Signer::Key,
            resigned(&|m| {
                if let Some(t) = m.transform.as_mut() {
                    let mut e = t.types.entries().to_vec();
                    e.iter_mut().for_each(|(_, add)| *add = add.wrapping_add(1));
                    t.types = Remap::new(e).expect("still sorted");
                }
            }),
        ),
        case(
            "transform_not_zstd",
            "Format::Inconsistent",
            Signer::Key,
            edited(&|mb| {
                let at = mb.len() - stored_len;
                mb[at..at + 4].copy_from_slice(b"junk");
            }),
        ),
        case(
            "transform_bytes_after",
            "Format::Inconsistent",
            Signer::Key,
            edited(&|mb| mb.push(0)),
        ),
        case(
            "transform_cut_short",
            "Format::Truncated::Manifest",
            Signer::Key,
            edited(&|mb| mb.truncate(mb.len() - 1)),
        ),
    ]
}

/// Cases derived from `programs.dwp`, a patch whose source transform rewrites a
/// synthetic x86-64 program's code and relocations through an address map.
fn program_cases() -> Vec<Case> {
    let patch = read("programs.dwp");
    let m = kit::manifest(&patch);
    let key = secret("key.key");
    let resigned = |f: &dyn Fn(&mut SourceTransform)| {
        let mut m = m.clone();
        if let Some(t) = m.transform.as_mut() {
            f(t);
        }
        kit::resign(&patch, &m, &key)
    };
    let case = |name, outcome, signer, bytes| Case {
        name,
        old: "programs-old.bin",
        outcome,
        signer,
        bytes,
    };
    vec![
        case("program_valid", "ok", Signer::Original, patch.clone()),
        case(
            "program_address_map_changed",
            "FrameHash::Output",
            Signer::Key,
            resigned(&|t| {
                let mut e = t.spaces[0].entries().to_vec();
                e.iter_mut().for_each(|(_, add)| *add = add.wrapping_add(1));
                t.spaces[0] = AddressMap::new(e).expect("still sorted");
            }),
        ),
        case(
            "program_address_map_missing",
            "Format::Inconsistent",
            Signer::Key,
            resigned(&|t| t.spaces.clear()),
        ),
        case(
            "program_relocations_cut",
            "Format::Inconsistent",
            Signer::Key,
            resigned(&|t| {
                for (r, kind) in &mut t.regions {
                    if matches!(kind, RegionKind::Rela { .. }) {
                        r.end -= 1;
                    }
                }
            }),
        ),
    ]
}

/// The table as the generator writes it.
fn render_table(cases: &[Case]) -> String {
    let mut t = String::from(
        "# deltaward format v1 cases: NAME OLD OUTCOME.\n\
         # cases/NAME.dwp applied to OLD with key.pub trusted gives OUTCOME: `ok` (the\n\
         # output is new.bin, or X-new.bin for X-old.bin) or the kind of error (see\n\
         # `kind` in engine/tests/vectors.rs). Made by `generate` in\n\
         # engine/tests/vectors.rs from patch.dwp, modules.dwp, runs.dwp and\n\
         # programs.dwp; do not edit by hand.\n",
    );
    for c in cases {
        t.push_str(&format!("{:<32} {:<8} {}\n", c.name, c.old, c.outcome));
    }
    t
}

/// A row of `cases.txt`.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    name: String,
    old: String,
    outcome: String,
}

fn table() -> Vec<Row> {
    read_text("cases.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let [name, old, outcome] = cols[..] else {
                panic!("cases.txt: not NAME OLD OUTCOME: {l:?}")
            };
            Row {
                name: name.into(),
                old: old.into(),
                outcome: outcome.into(),
            }
        })
        .collect()
}

fn case_file(name: &str) -> String {
    format!("cases/{name}.dwp")
}

/// Why a stored case file is not what the generator makes, if it is not.
fn stale(c: &Case, stored: &[u8]) -> Option<String> {
    if c.signer == Signer::Original {
        return (stored != c.bytes).then(|| "bytes differ".into());
    }
    let (Ok(fresh), Ok(old)) = (Sections::split(&c.bytes), Sections::split(stored)) else {
        return Some("does not split into sections".into());
    };
    if old.header != fresh.header || old.manifest != fresh.manifest {
        return Some("header or manifest differs".into());
    }
    if old.payloads != fresh.payloads {
        return Some("payloads differ".into());
    }
    // Both signatures must verify under the case's key with the same comment.
    let keys = trusted(c.signer.public_key_file());
    let verify = |sec: &Sections| {
        let text = std::str::from_utf8(sec.signature).ok()?;
        keys.verify_canonical(sec.manifest, text).ok()
    };
    let want = verify(&fresh).expect("a fresh signature verifies");
    (verify(&old) != Some(want)).then(|| "signature does not verify as the generator's".into())
}

/// Writes the frozen inputs of the transform cases, once: three synthetic kernel
/// modules built against one kernel (`modules-old.bin`) and the next
/// (`modules-new.bin`), and `modules.dwp`, signed by `key.key`.
fn freeze_modules(d: &Path) {
    use deltaward_testkit::modules::{module_image, NEW_KERNEL, OLD_KERNEL};
    let old = module_image(
        &OLD_KERNEL,
        3,
        300,
        |s| s.wrapping_mul(2_654_435_761),
        false,
        false,
    );
    let new = module_image(
        &NEW_KERNEL,
        3,
        300,
        |s| s.wrapping_mul(2_654_435_761) ^ s,
        true,
        true,
    );
    let patch = kit::build(
        &old,
        &new,
        &secret("key.key"),
        &deltaward_engine::BuildOptions::default(),
    );
    assert!(kit::manifest(&patch).transform.is_some());
    std::fs::write(d.join("modules-old.bin"), &old).expect("write modules-old.bin");
    std::fs::write(d.join("modules-new.bin"), &new).expect("write modules-new.bin");
    std::fs::write(d.join("modules.dwp"), &patch).expect("write modules.dwp");
}

/// Writes the frozen inputs of the program cases, once: a synthetic x86-64 program
/// and a synthetic AArch64 one (`programs-old.bin`) and their next builds, in
/// which every 40th function grew and the programs moved 517 bytes later in the
/// image (`programs-new.bin`), and `programs.dwp`, signed by `key.key`.
fn freeze_programs(d: &Path) {
    use deltaward_testkit::programs::{program_for, Machine};
    let around = kit::noise(3000, 9);
    let build = |m, grown: bool| {
        program_for(m, 5, 300, &|i| {
            if grown && i % 40 == 7 {
                3 + i % 11
            } else {
                0
            }
        })
    };
    // The new image puts its programs 517 bytes later.
    let image = |grown: bool, head: usize| {
        [
            &around[..head],
            &build(Machine::X86_64, grown),
            &around[1001..2000],
            &build(Machine::Aarch64, grown),
            &around[2000..],
        ]
        .concat()
    };
    let (old, new) = (image(false, 1001), image(true, 1518));
    let patch = kit::build(
        &old,
        &new,
        &secret("key.key"),
        &deltaward_engine::BuildOptions::default(),
    );
    assert!(kit::manifest(&patch)
        .transform
        .is_some_and(|t| t.spaces.len() == 2));
    std::fs::write(d.join("programs-old.bin"), &old).expect("write programs-old.bin");
    std::fs::write(d.join("programs-new.bin"), &new).expect("write programs-new.bin");
    std::fs::write(d.join("programs.dwp"), &patch).expect("write programs.dwp");
}

/// With `DELTAWARD_BLESS` set, writes the table and the case files (and key2 when
/// missing) once, before any test reads them.
fn blessed() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("DELTAWARD_BLESS").is_none() {
            return;
        }
        let d = dir();
        if !d.join("key2.key").exists() {
            let kp = generate_keypair(None).expect("keygen");
            std::fs::write(d.join("key2.key"), &kp.secret).expect("write key2.key");
            std::fs::write(d.join("key2.pub"), &kp.public).expect("write key2.pub");
        }
        if !d.join("modules.dwp").exists() {
            freeze_modules(&d);
        }
        if !d.join("programs.dwp").exists() {
            freeze_programs(&d);
        }
        if !d.join("runs.dwp").exists() {
            let patch = kit::build(
                &read("old.bin"),
                &read("new.bin"),
                &secret("key.key"),
                &deltaward_engine::BuildOptions::default(),
            );
            std::fs::write(d.join("runs.dwp"), &patch).expect("write runs.dwp");
        }
        let cases = generate();
        let cd = d.join("cases");
        std::fs::create_dir_all(&cd).expect("mkdir cases");
        let names: BTreeSet<String> = cases.iter().map(|c| c.name.to_owned()).collect();
        for entry in std::fs::read_dir(&cd).expect("read cases") {
            let path = entry.expect("entry").path();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if !names.contains(stem) {
                std::fs::remove_file(&path).expect("remove stale case");
            }
        }
        for c in &cases {
            let path = d.join(case_file(c.name));
            let keep = std::fs::read(&path).is_ok_and(|stored| stale(c, &stored).is_none());
            if !keep {
                std::fs::write(&path, &c.bytes).expect("write case");
            }
        }
        std::fs::write(d.join("cases.txt"), render_table(&cases)).expect("write cases.txt");
    });
}

/// Every case applies to exactly its expected outcome, and `verify_patch` agrees:
/// with the old image, on the same outcome; without it, on the same outcome unless
/// only the old image can reveal it.
#[test]
fn every_case_gives_its_outcome() {
    blessed();
    let keys = trusted("key.pub");
    let new = read("new.bin");
    let modules_new = read("modules-new.bin");
    let programs_new = read("programs-new.bin");
    let rows = table();
    assert!(
        rows.len() >= 20,
        "cases.txt lists only {} cases",
        rows.len()
    );
    let outcome = |r: Result<(), Error>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => kind(&e),
    };
    let mut failures = Vec::new();
    for row in &rows {
        let patch = read(&case_file(&row.name));
        let old = read(&row.old);
        let mut out = Vec::new();
        let applied = outcome(
            deltaward_engine::apply(
                &old.as_slice(),
                &mut patch.as_slice(),
                &mut out,
                &keys,
                &ApplyOptions::default(),
                &|_| {},
            )
            .map(drop),
        );
        if applied != row.outcome {
            failures.push(format!(
                "{}: apply gave {applied}, expected {}",
                row.name, row.outcome
            ));
            continue;
        }
        let want = match row.old.as_str() {
            "modules-old.bin" => &modules_new,
            "programs-old.bin" => &programs_new,
            _ => &new,
        };
        if applied == "ok" && out != *want {
            failures.push(format!(
                "{}: applied, but the output is not the new image",
                row.name
            ));
        }
        let verified = outcome(
            verify_patch(
                &mut patch.as_slice(),
                &keys,
                Some(&old.as_slice()),
                &ApplyOptions::default(),
            )
            .map(drop),
        );
        if verified != applied {
            failures.push(format!(
                "{}: verify with the old image gave {verified}, apply {applied}",
                row.name
            ));
        }
        let without = outcome(
            verify_patch::<&[u8], _>(&mut patch.as_slice(), &keys, None, &ApplyOptions::default())
                .map(drop),
        );
        let expected = if needs_old_image(&applied) {
            "ok"
        } else {
            &applied
        };
        if without != expected {
            failures.push(format!(
                "{}: verify without the old image gave {without}, expected {expected}",
                row.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The table and the case files are what the generator derives from patch.dwp: the
/// table lists exactly the files in `cases/`, and each file's sections are the
/// generator's (run with `DELTAWARD_BLESS=1` to regenerate).
#[test]
fn table_is_current() {
    blessed();
    let cases = generate();
    assert_eq!(
        read_text("cases.txt"),
        render_table(&cases),
        "cases.txt is not what the generator writes: bless (DELTAWARD_BLESS=1)"
    );
    let listed: BTreeSet<String> = table().into_iter().map(|r| r.name).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir().join("cases"))
        .expect("read cases/")
        .map(|e| {
            let name = e.expect("entry").file_name();
            let name = name.to_str().expect("utf-8 file name");
            name.strip_suffix(".dwp")
                .unwrap_or_else(|| panic!("cases/{name}: not a .dwp file"))
                .to_owned()
        })
        .collect();
    assert_eq!(listed, on_disk, "cases.txt and cases/ list different cases");
    let problems: Vec<String> = cases
        .iter()
        .filter_map(|c| stale(c, &read(&case_file(c.name))).map(|why| format!("{}: {why}", c.name)))
        .collect();
    assert!(
        problems.is_empty(),
        "stored cases differ from the generator (bless with DELTAWARD_BLESS=1):\n{}",
        problems.join("\n")
    );
}

/// The frozen patches are the ones the table's valid cases pin, and between them
/// they cover every frame kind (`patch.dwp` the first four, `runs.dwp` kind 4).
#[test]
fn valid_case_is_the_frozen_patch() {
    blessed();
    let mut kinds = BTreeSet::new();
    for (file, case) in [("patch.dwp", "valid"), ("runs.dwp", "runs_valid")] {
        let patch = read(file);
        assert_eq!(read(&case_file(case)), patch, "{case}");
        kinds.extend(kit::manifest(&patch).frames.iter().map(|f| f.kind as u8));
    }
    assert_eq!(
        kinds,
        (0..=4).collect::<BTreeSet<u8>>(),
        "the frozen patches must cover every frame kind"
    );
    assert!(
        FrameKind::from_byte(5).is_none(),
        "a new kind needs a vector"
    );
}
