//! `deltaward demo`: the whole pipeline on built-in defaults. Makes a key pair and
//! a realistic pair of firmware images, diffs, applies, verifies, and shows that a
//! tampered patch is refused.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use deltaward_engine::{self as sign, self as atomic, ApplyOptions, BuildOptions};

use crate::cmd;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One file of the synthetic image.
#[derive(Clone)]
enum Content {
    /// Machine-code-like bytes: opcodes with 32-bit absolute addresses.
    Code { seed: u64, len: usize, base: u32 },
    /// Configuration-like text.
    Text { seed: u64, len: usize },
    /// Incompressible data (a compressed kernel or blob).
    Blob { seed: u64, len: usize },
}

const WORDS: &[&str] = &[
    "pump",
    "rate",
    "alarm",
    "threshold",
    "infusion",
    "channel",
    "enable",
    "disable",
    "limit",
    "ml/h",
    "sensor",
    "calibration",
    "firmware",
    "version",
    "0x1f",
    "true",
    "false",
    "timeout",
    "retry",
    "log",
];

impl Content {
    fn render(&self, edit: Option<u64>) -> Vec<u8> {
        match *self {
            Content::Code { seed, len, base } => {
                let mut r = Rng(seed | 1);
                let mut e = Rng(edit.unwrap_or(1) | 1);
                let shift = if edit.is_some() { 0x40 } else { 0 };
                let mut out = Vec::with_capacity(len + 64);
                while out.len() < len {
                    let op = [0x48u8, 0x8b, 0xe8, 0xff, 0x0f, 0x89, 0xc3][r.below(7) as usize];
                    out.push(op);
                    out.push(r.below(16) as u8);
                    let addr = base + (r.below(1 << 16) as u32) * 4;
                    // The new version relinks: addresses move, a few instructions change.
                    let addr = if edit.is_some() && e.below(100) == 0 {
                        addr ^ 0x5a5a
                    } else {
                        addr + shift
                    };
                    out.extend_from_slice(&addr.to_le_bytes());
                    if edit.is_some() && e.below(2000) == 0 {
                        out.extend_from_slice(b"\x90\x90\x90\x90\x90\x90\x90\x90");
                    }
                }
                out.truncate(len);
                out
            }
            Content::Text { seed, len } => {
                let mut r = Rng(seed | 1);
                let mut e = Rng(edit.unwrap_or(1) | 1);
                let mut out = Vec::with_capacity(len + 32);
                while out.len() < len {
                    let w = WORDS[r.below(WORDS.len() as u64) as usize];
                    out.extend_from_slice(w.as_bytes());
                    out.push(if r.below(8) == 0 { b'\n' } else { b' ' });
                    if edit.is_some() && e.below(500) == 0 {
                        out.extend_from_slice(b"# changed in 2.1 ");
                    }
                }
                out.truncate(len);
                out
            }
            Content::Blob { seed, len } => {
                let mut r = Rng((seed ^ edit.unwrap_or(0)) | 1);
                (0..len).map(|_| r.next() as u8).collect()
            }
        }
    }
}

/// Lays files out on 4 KiB boundaries, with free (zero) space between some of them.
fn layout(files: &[Vec<u8>], size: usize, rng: &mut Rng) -> Vec<u8> {
    let mut img = vec![0u8; size];
    let mut at = 64 << 10; // a superblock-sized gap
    for f in files {
        let end = at + f.len();
        if end > size {
            break;
        }
        img[at..end].copy_from_slice(f);
        at = end.next_multiple_of(4096);
        if rng.below(6) == 0 {
            at += 4096 * rng.below(16) as usize;
        }
    }
    img
}

/// Builds an old and a new firmware image of `size` bytes: code and text files that
/// change a little (relinked addresses, edits, inserted bytes), a kernel blob that
/// changes completely, files that move, and free space.
pub fn images(size: usize) -> (Vec<u8>, Vec<u8>) {
    let mut r = Rng(0x0de1_7a3a_4d00_0001);
    let budget = size * 6 / 10;
    let mut files = Vec::new();
    let mut used = 0;
    while used < budget {
        let len = 4096 + r.below(400 << 10) as usize;
        let seed = r.next();
        let c = match r.below(10) {
            0..=5 => Content::Code {
                seed,
                len,
                base: 0x0040_0000 + (r.below(64) as u32) * 0x10000,
            },
            6..=8 => Content::Text { seed, len: len / 4 },
            _ => Content::Blob { seed, len: len / 2 },
        };
        used += len;
        files.push(c);
    }
    let old_files: Vec<Vec<u8>> = files.iter().map(|c| c.render(None)).collect();
    let mut new_files: Vec<Vec<u8>> = Vec::with_capacity(files.len() + 1);
    for (i, c) in files.iter().enumerate() {
        // About a third of the files stay as they were; the rest are rebuilt.
        if r.below(3) == 0 {
            new_files.push(old_files[i].clone());
        } else {
            new_files.push(c.render(Some(r.next())));
        }
    }
    // A new file in the middle shifts everything after it; two files swap places.
    let at = new_files.len() / 2;
    new_files.insert(
        at,
        Content::Text {
            seed: 99,
            len: 10_000,
        }
        .render(None),
    );
    let n = new_files.len();
    if n > 8 {
        new_files.swap(3, n - 3);
    }
    let old = layout(&old_files, size, &mut Rng(7));
    let new = layout(&new_files, size, &mut Rng(7));
    (old, new)
}

pub fn run(
    dir: Option<&Path>,
    size_mib: u64,
    old: Option<&Path>,
    new: Option<&Path>,
) -> Result<()> {
    let tmp;
    let dir: PathBuf = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.to_path_buf()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a work directory")?;
            tmp.path().to_path_buf()
        }
    };
    println!("deltaward demo in {}", dir.display());

    let kp = sign::generate_keypair(None)?;
    let (sk_path, pk_path) = (dir.join("demo.key"), dir.join("demo.pub"));
    atomic::write_private_file(&sk_path, kp.secret.as_bytes())?;
    atomic::write_file(&pk_path, kp.public.as_bytes())?;
    println!(
        "1. key pair {} (minisign format): {}, {}",
        kp.key_id,
        sk_path.display(),
        pk_path.display()
    );

    let (old_path, new_path) = match (old, new) {
        (Some(o), Some(n)) => (o.to_path_buf(), n.to_path_buf()),
        _ => {
            let size = usize::try_from(size_mib << 20).context("image size")?;
            let (o, n) = images(size);
            let (op, np) = (dir.join("firmware-2.0.img"), dir.join("firmware-2.1.img"));
            atomic::write_file(&op, &o)?;
            atomic::write_file(&np, &n)?;
            (op, np)
        }
    };
    let old_len = std::fs::metadata(&old_path)?.len();
    let new_len = std::fs::metadata(&new_path)?.len();
    println!(
        "2. images: old {} ({} bytes), new {} ({} bytes)",
        old_path.display(),
        old_len,
        new_path.display(),
        new_len
    );

    let key = sign::SecretKey::from_text(&kp.secret, None)?;
    let patch_path = dir.join("update.dwp");
    let d = rayon::ThreadPoolBuilder::new()
        .build()
        .context("starting worker threads")?
        .install(|| {
            cmd::diff(
                &old_path,
                &new_path,
                &patch_path,
                &key,
                &BuildOptions::default(),
            )
        })?;
    let kinds =
        |k: deltaward_engine::FrameKind| d.manifest.frames.iter().filter(|f| f.kind == k).count();
    println!(
        "3. diff: patch {} bytes = {:.2}% of the new image, {} frames (copy {}, zero {}, zstd {}, bsdiff {}), {:.2} s",
        d.patch_size,
        100.0 * d.patch_size as f64 / new_len.max(1) as f64,
        d.manifest.frames.len(),
        kinds(deltaward_engine::FrameKind::Copy),
        kinds(deltaward_engine::FrameKind::Zero),
        kinds(deltaward_engine::FrameKind::Zstd),
        kinds(deltaward_engine::FrameKind::Bsdiff),
        d.seconds
    );

    let trusted = crate::keys::trusted(&[&pk_path])?;
    let out_path = dir.join("firmware-2.1.rebuilt.img");
    let a = cmd::apply_cmd(
        &old_path,
        &patch_path,
        &out_path,
        &trusted,
        &ApplyOptions::default(),
        None,
    )?;
    println!(
        "4. apply: signature by {} verified, old image verified, {} frames verified, {} bytes written in {:.2} s (working memory bound {} bytes)",
        a.report.key_id,
        a.report.manifest.frames.len(),
        a.report.manifest.target_size,
        a.seconds,
        a.report.manifest.apply_memory()
    );
    let same = std::fs::read(&out_path)? == std::fs::read(&new_path)?;
    anyhow::ensure!(same, "the rebuilt image differs from the new image");
    println!("5. rebuilt image is byte-identical to the new image");

    // A man in the middle flips one byte of the patch: the device must refuse it.
    let mut tampered = std::fs::read(&patch_path)?;
    let mid = tampered.len() / 2;
    if let Some(b) = tampered.get_mut(mid) {
        *b ^= 0x01;
    }
    let bad_path = dir.join("tampered.dwp");
    atomic::write_file(&bad_path, &tampered)?;
    let bad_out = dir.join("must-not-exist.img");
    match cmd::apply_cmd(
        &old_path,
        &bad_path,
        &bad_out,
        &trusted,
        &ApplyOptions::default(),
        None,
    ) {
        Ok(_) => anyhow::bail!("a tampered patch was accepted"),
        Err(e) => {
            anyhow::ensure!(!bad_out.exists(), "a tampered patch left an output behind");
            println!(
                "6. tampered patch (one byte flipped at {mid}) refused: {:#}",
                e.root_cause()
            );
        }
    }
    release_demo(&dir, &kp, &key, &old_path, &new_path)?;
    println!("demo complete");
    Ok(())
}

/// Release notes of the demo release.
const DEMO_NOTES: &str = r#"hardware_ids = ["demo-pump-a1"]
expires_in = "180d"

[compatibility]
statement = "Firmware 2.1 for demo infusion pump A1 running firmware 2.0."
applies_from = ["2.0"]
hardware = ["Demo pump A1"]
requires = ["bootloader 3.2 or later"]
incompatible_with = ["docking station firmware before 1.4"]

[[security_fixes]]
id = "CVE-2026-12345"
severity = "high"
cvss_vector = "CVSS:3.1/AV:A/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
summary = "Authentication bypass in the service interface."

[support]
class = "supported"
end_of_support = "2031-12-31"

[approval]
approved = true

[installation]
instructions = "Instructions for use DP-A1, section 9: Software updates"
"#;

/// Steps 7-9: a signed release with root, channel and notice, checked as a device.
fn release_demo(
    dir: &Path,
    kp: &sign::KeyPairText,
    key: &sign::SecretKey,
    old_path: &Path,
    new_path: &Path,
) -> Result<()> {
    use deltaward_release::{check, model, notice, repo};
    let repo_dir = dir.join("repo");
    let r = repo::Repo::new(&repo_dir);
    let root_kp = sign::generate_keypair(None)?;
    let root_key = sign::SecretKey::from_text(&root_kp.secret, None)?;
    let line = |t: &str| t.lines().nth(1).unwrap_or_default().to_owned();
    let role = |id: &str| model::Role {
        keyids: vec![id.to_owned()],
        threshold: 1,
    };
    let now = std::time::SystemTime::now();
    let root = model::Root {
        kind: "deltaward-root".into(),
        spec_version: model::SPEC_VERSION,
        version: 1,
        expires: repo::timestamp(now + std::time::Duration::from_secs(365 * 86_400)),
        keys: [
            (root_kp.key_id.clone(), line(&root_kp.public)),
            (kp.key_id.clone(), line(&kp.public)),
        ]
        .into_iter()
        .collect(),
        roles: model::Roles {
            root: role(&root_kp.key_id),
            release: role(&kp.key_id),
            channel: role(&kp.key_id),
        },
    };
    repo::write_root(&r, &root, &[&root_key])?;
    let req = repo::ReleaseRequest {
        product: "demo-pump".into(),
        version: "2.1".into(),
        counter: 1,
        image: new_path.to_path_buf(),
        bases: vec![repo::BaseImage {
            version: "2.0".into(),
            path: old_path.to_path_buf(),
        }],
        notes: repo::parse_notes(DEMO_NOTES)?,
        build: BuildOptions::default(),
        memory_limit: 4 << 30,
        channel_validity: repo::CHANNEL_VALIDITY,
        now,
    };
    let t = std::time::Instant::now();
    let release = rayon::ThreadPoolBuilder::new()
        .build()?
        .install(|| repo::build_release(&r, &req, &[key], &[key]))?;
    println!(
        "7. release demo-pump 2.1 (counter 1) in {}: patch {} bytes, full image {} bytes, release.json and channel.json signed, {:.2} s",
        repo_dir.display(),
        release.bases.first().map_or(0, |b| b.patch.length),
        release.full_image.object.length,
        t.elapsed().as_secs_f64()
    );
    let state = check::StateDir::new(&dir.join("device-state"));
    state.init(&std::fs::read(repo_dir.join("root.json"))?)?;
    let device = check::Device::from_image("demo-pump-a1", "2.0", old_path)?;
    let c = check::check_release(&r, "demo-pump", &state, &device, now)?;
    let plan = match &c.plan {
        check::Plan::Patch(b) => format!("apply the patch from {}", b.version),
        check::Plan::Full => "install the full image".into(),
        check::Plan::UpToDate => "nothing to do".into(),
    };
    println!("8. device check: root, channel and release signatures, expiry, counter, hardware and base verified; plan: {plan}");
    println!("9. the update notice operators read:\n");
    print!("{}", notice::render(&release, notice::Format::Text));
    println!();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_deterministic_and_differ() {
        let (a, b) = images(4 << 20);
        let (c, d) = images(4 << 20);
        assert!(a == c && b == d);
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 << 20);
    }
}
